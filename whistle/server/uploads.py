# SPDX-License-Identifier: AGPL-3.0-or-later
"""Upload handling: where Werkzeug puts the bytes of each uploaded file part.

Werkzeug spools uploads over 500 KB to a named temporary file by default. On the JavaScript-off
path those bytes are plaintext, so this module replaces the stream factory: a file part posted to
the form is encrypted (secretstream, fresh key) the moment its bytes arrive and only ciphertext
reaches an anonymous spool file. Parts posted to the API are already ciphertext and are spooled as
they come. Every other endpoint gets a small in-memory buffer and nothing on disk.

Which is which is declared on the view with :func:`accepts` (upload_policy.py), never listed
here: a new upload page takes its policy with it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from whistle.core.crypto import StreamEncryptor, new_stream_key
from whistle.server.quotas import ByteBudget, request_budget
from whistle.server.state import get_state
from whistle.server.storage import SpoolFile
from whistle.server.upload_policy import UploadPolicy, accepts, declared

__all__ = ["CiphertextSpool", "ClientTooSlow", "EncryptingSpool", "SmallMemoryBuffer", "UploadPolicy",
           "WhistleRequest", "accepts"]
_SMALL_LIMIT = 64 * 1024


class ClientTooSlow(TimeoutError):
    """The client sent its request body more slowly than the server's minimum rate (raised by the
    production worker, whistle/worker.py, while the application reads the body); nothing was
    stored, and the answer is 408."""


class CiphertextSpool(io.RawIOBase):
    """A file part that is already ciphertext: written straight to an anonymous spool file."""

    def __init__(self, spool_dir: Path, budget: ByteBudget | None = None) -> None:
        super().__init__()
        self._spool = SpoolFile(spool_dir)
        # The request's quota allowance (quotas.py): stop as soon as more arrives than admitted.
        self._budget = budget

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._budget is not None:
            self._budget.spend(len(data))
        return self._spool.write(bytes(data))

    def seek(self, offset: int, whence: int = 0) -> int:
        # Werkzeug rewinds each part when it ends; reading happens through iter_chunks().
        return 0

    @property
    def size(self) -> int:
        return self._spool.size

    def iter_chunks(self) -> Iterator[bytes]:
        return self._spool.iter_chunks()

    def close(self) -> None:
        self._spool.close()
        super().close()


class EncryptingSpool(CiphertextSpool):
    """A plaintext file part: encrypted chunk by chunk as it arrives; plaintext never hits disk."""

    def __init__(self, spool_dir: Path, budget: ByteBudget | None = None) -> None:
        super().__init__(spool_dir, budget)
        self.key = new_stream_key()
        self._enc = StreamEncryptor(self.key)
        self._spool.write(self._enc.header)
        self._finished = False

    def write(self, data: Any) -> int:
        if self._budget is not None:
            self._budget.spend(len(data))
        self._spool.write(self._enc.update(bytes(data)))
        return len(data)

    def finish(self) -> None:
        """Write the FINAL chunk. Called once the whole part has been received."""
        if not self._finished:
            self._spool.write(self._enc.finish())
            self._finished = True

    @property
    def plaintext_size(self) -> int:
        return self._enc.plaintext_size

    def iter_chunks(self) -> Iterator[bytes]:
        self.finish()
        return self._spool.iter_chunks()


class SmallMemoryBuffer(io.BytesIO):
    """For file parts sent where none are expected: memory only, refused past 64 KiB."""

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > _SMALL_LIMIT:
            raise RequestEntityTooLarge()
        return super().write(data)


class WhistleRequest(Request):
    """Flask's request with the upload stream factory described in the module docstring."""

    @property
    def is_json(self) -> bool:
        # No whistle endpoint reads a JSON body. Flask-WTF would hand one to the forms, whose
        # validators expect text (a number, a list or deep nesting was a 500): forms see no data.
        return False

    def _load_form_data(self) -> None:
        super()._load_form_data()
        # Only the file fields the view declared: Flask-WTF puts request.files before request.form,
        # so a file posted as "passphrase" or "name" reached a text validator as a FileStorage (a
        # 500). A view declared without fields (the API) checks its parts itself.
        declaration = declared()
        wanted = frozenset() if declaration is None else declaration.fields
        d = self.__dict__
        files = []
        for name, storage in d["files"].items(multi=True):
            if isinstance(name, str) and (wanted is None or name in wanted):
                files.append((name, storage))
            else:
                storage.close()
        d["files"] = self.parameter_storage_class(files)
        # A part whose Content-Disposition names no field comes as a field named None, on which
        # Flask-WTF's CSRF check called None.endswith() (a 500): such a part means nothing.
        d["form"] = self.parameter_storage_class(
            [(k, v) for k, v in d["form"].items(multi=True) if isinstance(k, str)])

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        declaration = declared()
        if declaration is None:
            return SmallMemoryBuffer()
        spool_dir = get_state().config.spool_dir
        budget = request_budget()
        if declaration.policy is UploadPolicy.PLAINTEXT:
            return EncryptingSpool(spool_dir, budget)  # type: ignore[return-value]
        return CiphertextSpool(spool_dir, budget)  # type: ignore[return-value]
