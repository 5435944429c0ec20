import io, re
from conftest import csrf_token

def test_smoke(client, app):
    r = client.get("/")
    assert r.status_code == 200, r.data[:500]
    tok = csrf_token(client)
    r = client.post("/submit", data={"csrf_token": tok, "category": "corruption", "body": "hola canary",
        "attachments": [(io.BytesIO(b"x"*200000), "a.pdf", "application/pdf")]}, content_type="multipart/form-data")
    print(r.get_data(as_text=True)[:3000])
    assert r.status_code == 200
