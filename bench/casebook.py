# SPDX-License-Identifier: AGPL-3.0-or-later
"""The offline casebook (issue 12): import speed, search and inbox latency, memory on a big bundle.

1. **Import vs raw decrypt + write.** A real bundle (BundleWriter, as the server's export) of
   ``--reports`` reports (10,000), each with one attachment of 2–24 KB and generated Spanish text,
   is written once (not timed). Then, alternately, in the same run: ``decrypt_bundle`` (what
   ``whistle decrypt`` does: open, check, write text files and attachments) into a fresh folder,
   and ``import_bundle`` (``whistle casebook import``) into a fresh casebook. The figure is
   decrypt's time over import's (import's throughput relative to raw decrypt + write): ≥ 0.8.
2. **Search and inbox at 100,000 reports.** A casebook is filled with ``--cases`` (100,000)
   generated Spanish reports (and a follow-up message for one in five) through the casebook's own
   tables and search index (generated directly: sealing 100,000 envelopes would only measure
   PyNaCl). Then, through the web UI's test client at its own address (the full page: query,
   template, headers), a mix of searches (common and rare words, two words, without accents, a
   prefix, with filters, page 3) and a mix of inbox pages (default, each sort, filters, overdue,
   a tag, page 200): p95 < 100 ms for search and < 50 ms for the inbox.
3. **Memory on a big bundle** (``--big-gib``, 2 by default; 0 skips it): one report with one
   attachment of that size, imported in a child process whose peak RSS is read from
   ``getrusage``: it must stay under 200 MiB (a bundle held whole would be 2 GiB).

    .venv/bin/python bench/casebook.py [--reports 10000] [--cases 100000] [--big-gib 2] [--reps 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, MiB, Result, banner, emit, median, percentile, tempdir  # noqa: E402

IMPORT_TARGET = 0.8
SEARCH_P95_MS = 100.0
INBOX_P95_MS = 50.0
BIG_RSS_MIB = 200

WORDS = (  # noqa: SIM905 - a text of words reads better than a list of 260 strings
    "denuncia hospital farmacia medicamentos insulina paciente médico enfermera turno cita "
    "atención afiliado jubilado pensión cobro soborno coima corrupción funcionario director "
    "jefe área emergencia quirófano cirugía receta bodega inventario compra contrato licitación "
    "proveedor sobreprecio factura dinero efectivo pago irregular retraso espera semanas meses "
    "niño niña madre padre anciano discapacidad silla ruedas ambulancia traslado laboratorio "
    "examen resultado radiografía tomografía diálisis oncología quimioterapia vacuna guardia "
    "seguridad maltrato grito humillación negligencia error diagnóstico muerte fallecimiento "
    "reclamo queja ventanilla trámite papeles firma sello certificado subsidio préstamo "
    "hipotecario aportes patronal empleador afiliación mora multa Quito Guayaquil Cuenca Ambato "
    "Manta Loja Machala Portoviejo Riobamba Ibarra dispensario centro salud clínica unidad "
    "médica especialista cardiología pediatría ginecología traumatología odontología "
    "lunes martes miércoles jueves viernes mañana tarde noche ayer hoy semana pasada "
    "no entregan falta faltan nunca siempre otra vez cobran piden exigen amenazan ocultan "
    "desaparecen venden privado particular familiar amigo sindicato gerente administrador"
).split()
CATEGORIES = ("poor_service", "medication", "irregularities", "corruption", "other")
STATUSES = ("received", "acknowledged", "investigating", "closed")
CHANNELS = ("browser", "server-form")
TAGS = ("urgente", "farmacia", "quito", "guayaquil", "seguimiento", "fiscalía", "duplicado")


def spanish_text(rng: random.Random, words: int) -> str:
    """Generated Spanish-looking text: sentences of the word list, capitalised, with periods."""
    out = []
    while words > 0:
        n = min(words, rng.randint(6, 18))
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        out.append(sentence[0].upper() + sentence[1:] + ".")
        words -= n
    return " ".join(out)


# --- 1. import vs raw decrypt + write -------------------------------------------------------


def write_bundle(path: Path, reports: int, seed: int, unit_public: object) -> tuple[int, int]:
    """A bundle of ``reports`` reports with one attachment each; return (items, plaintext bytes)."""
    import io

    from whistle.core.bundle import (
        BundleItem,
        BundleReport,
        BundleWriter,
        attachment_member,
        envelope_member,
    )
    from whistle.core.crypto import (
        AttachmentRef,
        Binding,
        Envelope,
        UnitSecretKey,
        b64encode,
        encrypt_stream,
        new_stream_key,
        seal_envelope,
    )

    rng = random.Random(seed)
    writer = BundleWriter(path, created_on="2026-05-01", unit_fingerprint="bench")
    total = 0
    for n in range(reports):
        source = UnitSecretKey.from_seed(rng.randbytes(32)).public_key.encode()
        binding = Binding(rng.randbytes(16), 1, source)
        data = spanish_text(rng, rng.randint(300, 3500)).encode("utf-8")
        key = new_stream_key()
        out = io.BytesIO()
        encrypt_stream(io.BytesIO(data), out, key)
        envelope = Envelope(kind="report", category=rng.choice(CATEGORIES),
                            body=spanish_text(rng, rng.randint(40, 400)), binding=binding,
                            attachments=(AttachmentRef(f"documento-{n}.txt", "text/plain", len(data), key),))
        rid, iid = f"{n:016x}", f"{n + 10**9:016x}"
        writer.add_member(envelope_member(iid), [seal_envelope(envelope, unit_public)])  # type: ignore[arg-type]
        writer.add_member(attachment_member(iid, 0), [out.getvalue()])
        entry = BundleReport(id=rid, received_on="2026-04-30", status="received", channel="browser",
                             source_public_key=b64encode(source))
        entry.items.append(BundleItem(id=iid, seq=1, kind="report", created_on="2026-04-30",
                                      channel="browser", envelope=envelope_member(iid),
                                      attachments=[attachment_member(iid, 0)]))
        writer.add_report(entry)
        total += len(data)
    writer.close()
    return reports, total


def bench_import(tmp: Path, reports: int, reps: int) -> Result:
    from whistle.core.crypto import UnitSecretKey
    from whistle.workstation.casebook.importer import import_bundle
    from whistle.workstation.casebook.store import Casebook
    from whistle.workstation.decrypt import decrypt_bundle

    key = UnitSecretKey.generate()
    bundle = tmp / "bundle.zip"
    t0 = time.perf_counter()
    items, plain = write_bundle(bundle, reports, 12, key.public_key)
    print(f"bundle: {items} reports, {plain / MiB:.1f} MiB of attachments, "
          f"{bundle.stat().st_size / MiB:.1f} MiB, written in {time.perf_counter() - t0:.1f} s")
    raw, imp = [], []
    for rep in range(reps):
        out = tmp / f"decrypted-{rep}"
        t0 = time.perf_counter()
        summary = decrypt_bundle(bundle, key, out)
        raw.append(time.perf_counter() - t0)
        assert summary.items == reports
        shutil.rmtree(out)
        t0 = time.perf_counter()
        with Casebook.open(tmp / f"casebook-{rep}") as book:
            done = import_bundle(book, bundle, [key])
        imp.append(time.perf_counter() - t0)
        assert done.items_added == reports and not done.quarantined
        shutil.rmtree(tmp / f"casebook-{rep}")
        print(f"rep {rep + 1}: decrypt + write {raw[-1]:.2f} s, casebook import {imp[-1]:.2f} s")
    ratio = median(raw) / median(imp)
    return Result("casebook", f"import {reports} reports with attachments", median(imp), "s",
                  "whistle decrypt (raw decrypt + write)", median(raw), ratio, f"≥ {IMPORT_TARGET}",
                  ratio >= IMPORT_TARGET, {"runs import s": imp, "runs decrypt s": raw,
                                           "attachments MiB": plain / MiB})


# --- 2. search and inbox at 100,000 reports ---------------------------------------------------


def fill_casebook(root: Path, cases: int, seed: int) -> None:
    """``cases`` generated reports straight into the casebook's tables and search index."""
    from whistle.workstation.casebook import deadlines
    from whistle.workstation.casebook.store import Casebook

    rng = random.Random(seed)
    start = dt.date(2025, 1, 1)
    with Casebook.open(root) as book:
        db = book.db
        db.execute("BEGIN")
        rowid = 0
        for n in range(cases):
            cid = f"{rng.getrandbits(64):016x}"
            received = (start + dt.timedelta(days=rng.randint(0, 500))).isoformat()
            ack_on = None
            if rng.random() < 0.7:
                ack_on = (dt.date.fromisoformat(received) + dt.timedelta(days=rng.randint(0, 12))).isoformat()
            db.execute(
                "INSERT INTO cases (id, received_on, status, status_on, channel, category, "
                "manifest_key, report_version, assignee, ack_due, ack_on, feedback_due, "
                "last_activity, unread, item_count) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (cid, received, rng.choice(STATUSES), received, rng.choice(CHANNELS),
                 rng.choice(CATEGORIES), "x", 2, rng.choice(("", "", "ana", "luis", "marta")),
                 deadlines.ack_due(received), ack_on, deadlines.feedback_due(received, ack_on),
                 received, rng.randint(0, 1), 1))
            for seq in (1, 2) if rng.random() < 0.2 else (1,):
                rowid += 1
                body = spanish_text(rng, rng.randint(30, 250))
                db.execute("INSERT INTO items (rowid, id, case_id, seq, kind, created_on, channel, "
                           "version, body) VALUES (?,?,?,?,?,?,?,?,?)",
                           (rowid, f"{rowid:016x}", cid, seq, "report" if seq == 1 else "message",
                            received, "browser", 2, body))
                db.execute("INSERT INTO items_fts (rowid, body, names) VALUES (?,?,?)",
                           (rowid, body, ""))
            if rng.random() < 0.1:
                db.execute("INSERT INTO tags (case_id, tag) VALUES (?, ?)", (cid, rng.choice(TAGS)))
            if n % 20000 == 19999:
                db.execute("COMMIT")
                db.execute("BEGIN")
        db.execute("COMMIT")
        db.execute("INSERT INTO items_fts (items_fts) VALUES ('optimize')")
        db.execute("ANALYZE")


def time_pages(client: object, base: str, paths: list[str],
               rounds: int) -> tuple[list[float], dict[str, float]]:
    """Each path ``rounds`` times (after one warm-up each); all timings in ms, and each path's p95."""
    timings: list[float] = []
    per_path: dict[str, float] = {}
    for path in paths:
        assert client.get(path, base_url=base).status_code == 200, path  # type: ignore[attr-defined]
    for path in paths:
        mine = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            answer = client.get(path, base_url=base)  # type: ignore[attr-defined]
            answer.get_data()
            mine.append((time.perf_counter() - t0) * 1000)
        per_path[path] = percentile(mine, 95)
        timings += mine
    return timings, per_path


def bench_queries(tmp: Path, cases: int, rounds: int) -> list[Result]:
    import secrets

    from whistle.workstation.casebook.web import ServeState, create_app

    root = tmp / "big-casebook"
    t0 = time.perf_counter()
    fill_casebook(root, cases, 7)
    size = (root / "casebook.sqlite3").stat().st_size
    print(f"casebook: {cases} cases generated in {time.perf_counter() - t0:.1f} s, "
          f"database {size / MiB:.0f} MiB")
    state = ServeState(root=root, host="127.0.0.1", port=47000, token=secrets.token_hex(8),
                       signing_key=None, run_id=secrets.token_hex(8))
    app = create_app(state)
    client = app.test_client()
    base = state.origin
    assert client.get(f"/login?token={state.token}", base_url=base).status_code == 303
    searches = ["/search?q=insulina", "/search?q=hospital", "/search?q=corrupcion+soborno",
                "/search?q=NINO+farmacia", "/search?q=quimioterapia+Loja", "/search?q=medica*",
                "/search?q=hospital&category=corruption&status=received",
                "/search?q=farmacia&from=2025-06-01&to=2025-09-30", "/search?q=receta&page=3",
                "/search?q=diálisis&tag=urgente", "/search?q=cobran+efectivo&sort=received"]
    inbox = ["/", "/?sort=ack&dir=asc", "/?sort=feedback", "/?sort=activity", "/?category=medication",
             "/?status=received&channel=browser", "/?overdue=1", "/?tag=urgente", "/?page=200",
             "/?assignee=ana&sort=received&dir=asc", "/?unread=1&per_page=100",
             "/?from=2025-03-01&to=2025-03-31&category=corruption"]
    results = []
    for name, paths, target in (("search", searches, SEARCH_P95_MS), ("inbox page", inbox, INBOX_P95_MS)):
        timings, per_path = time_pages(client, base, paths, rounds)
        p95 = percentile(timings, 95)
        worst = max(per_path, key=lambda p: per_path[p])
        print(f"{name}: p95 {p95:.1f} ms over {len(timings)} requests; slowest path {worst} "
              f"(p95 {per_path[worst]:.1f} ms)")
        results.append(Result("casebook", f"{name} p95 at {cases} reports (full page)", p95, "ms",
                              "target", target, target / p95 if p95 else 0.0, f"< {target:.0f} ms",
                              p95 < target, {"median ms": median(timings), "per path p95 ms": {
                                  p: round(v, 1) for p, v in per_path.items()}}))
    return results


# --- 3. memory on a big bundle ----------------------------------------------------------------


CHILD = """
import resource, sys
from pathlib import Path
from whistle.core.crypto import UnitSecretKey
from whistle.workstation.casebook.importer import import_bundle
from whistle.workstation.casebook.store import Casebook
key = UnitSecretKey.from_raw(bytes.fromhex(sys.argv[3]))
with Casebook.open(Path(sys.argv[2])) as book:
    s = import_bundle(book, Path(sys.argv[1]), [key])
assert s.attachments_added == 1 and not s.quarantined, s
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_big(tmp: Path, gib: float) -> Result:
    import os as _os

    from whistle.core.bundle import (
        BundleItem,
        BundleReport,
        BundleWriter,
        attachment_member,
        envelope_member,
    )
    from whistle.core.crypto import (
        AttachmentRef,
        Binding,
        Envelope,
        StreamEncryptor,
        UnitSecretKey,
        b64encode,
        new_stream_key,
        seal_envelope,
    )

    key = UnitSecretKey.generate()
    size = int(gib * 1024 * MiB)
    block = _os.urandom(MiB)
    stream_key = new_stream_key()

    def pieces():  # type: ignore[no-untyped-def]
        enc = StreamEncryptor(stream_key)
        yield enc.header
        left = size
        while left:
            n = min(left, MiB)
            yield enc.update(block[:n])
            left -= n
        yield enc.finish()

    source = UnitSecretKey.generate().public_key.encode()
    envelope = Envelope(kind="report", category="corruption", body="Grabación del soborno.",
                        binding=Binding(_os.urandom(16), 1, source),
                        attachments=(AttachmentRef("grabacion.mp4", "video/mp4", size, stream_key),))
    bundle = tmp / "big.zip"
    t0 = time.perf_counter()
    writer = BundleWriter(bundle, created_on="2026-05-01", unit_fingerprint="bench")
    iid = "ab" * 8
    writer.add_member(envelope_member(iid), [seal_envelope(envelope, key.public_key)])
    writer.add_member(attachment_member(iid, 0), pieces())
    entry = BundleReport(id="cd" * 8, received_on="2026-05-01", status="received", channel="browser",
                         source_public_key=b64encode(source))
    entry.items.append(BundleItem(id=iid, seq=1, kind="report", created_on="2026-05-01",
                                  channel="browser", envelope=envelope_member(iid),
                                  attachments=[attachment_member(iid, 0)]))
    writer.add_report(entry)
    writer.close()
    print(f"big bundle: {bundle.stat().st_size / MiB:.0f} MiB written in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(tmp / "big-casebook"),
                          key.encode().hex()], capture_output=True, text=True, env=env, check=True)
    took = time.perf_counter() - t0
    rss_mib = int(out.stdout.strip().splitlines()[-1]) / 1024
    print(f"import: {took:.1f} s, peak RSS {rss_mib:.0f} MiB")
    return Result("casebook", f"peak memory importing a {gib:g} GiB bundle", rss_mib, "MiB",
                  "bundle size", size / MiB, (size / MiB) / rss_mib, f"< {BIG_RSS_MIB} MiB",
                  rss_mib < BIG_RSS_MIB, {"import s": took})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--big-gib", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20, help="requests per page path")
    args = parser.parse_args()
    banner("casebook")
    results: list[Result] = []
    with tempdir("whistle-bench-casebook-") as tmp:
        if args.reports:
            results.append(bench_import(tmp, args.reports, args.reps))
        if args.cases:
            results += bench_queries(tmp, args.cases, args.rounds)
        if args.big_gib:
            results.append(bench_big(tmp, args.big_gib))
    for result in results:
        emit(result)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
