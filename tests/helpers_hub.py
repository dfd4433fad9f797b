"""Test helpers: tiny models with non-trivial BatchNorm, and a local stand-in for the Hub.

``HubServer`` answers the Hub's ``/{repo}/resolve/{revision}/{filename}`` URLs on 127.0.0.1 with
the headers ``huggingface_hub.file_download`` relies on (read from huggingface_hub 2.4):

* ``X-Repo-Commit``: the 40-hex commit the revision resolves to; without it the client refuses
  the response as "not served by a Hugging Face Hub endpoint";
* ``ETag`` (quoted; the client strips quotes): names the blob in the cache; LFS files also get
  ``X-Linked-Etag`` (their sha256) and ``X-Linked-Size``, which the client prefers;
* ``Content-Length``: the client checks the downloaded size against it;
* errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``),
  which the client turns into its typed exceptions.

Nothing listens beyond 127.0.0.1; every other path (e.g. the client's ``/api/...`` telemetry)
gets a plain 404.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import torch

from audioembed.model import AudioResNet, ModelConfig

TINY_CONFIG = ModelConfig(layers=(1, 1, 1, 1), base_width=8)


def tiny_model(seed: int = 0) -> AudioResNet:
    """A tiny ResNet in eval mode whose BatchNorms do real work.

    Fresh BNs are identities (mean 0, var 1, weight 1, bias 0), and the last BN of each block is
    zero-initialised, which would make every residual branch vanish; random statistics and
    affine parameters make the tests exercise the whole network.
    """
    torch.manual_seed(seed)
    model = AudioResNet(TINY_CONFIG)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean.data = 0.2 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
    return model.eval()


def fp16_rounded(model: AudioResNet) -> AudioResNet:
    """``model`` with its floating-point weights rounded through fp16, as a release stores them."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_id(label: str) -> str:
    """A deterministic 40-hex commit id."""
    return hashlib.sha1(label.encode()).hexdigest()


class HubServer:
    """A minimal Hub for ``hf_hub_download``: one repository, several commits and refs.

    ``commits`` maps a commit id to ``{filename: bytes}``; ``refs`` maps branch/tag names to
    commit ids. A revision is a ref name or a commit id. ``requests`` records
    ``(method, path, headers)`` of every request, for assertions on what the client sent.
    ``lfs`` names the files served like Git LFS files (sha256 ETag via ``X-Linked-Etag``).
    """

    def __init__(self, repo_id: str, commits: dict[str, dict[str, bytes]], refs: dict[str, str],
                 lfs: tuple[str, ...] = ("model.safetensors",)):
        self.repo_id = repo_id
        self.commits = commits
        self.refs = refs
        self.lfs = set(lfs)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_folders(cls, repo_id: str, folders: dict[str, Path]) -> "HubServer":
        """One commit per ref, each serving the files of a model folder."""
        commits, refs = {}, {}
        for ref, folder in folders.items():
            c = commit_id(f"{repo_id}@{ref}")
            commits[c] = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
            refs[ref] = c
        return cls(repo_id, commits, refs)

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer.url: the server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None

    def start(self) -> "HubServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                return

            def _error(self, code: int, error_code: str | None = None, commit: str | None = None):
                body = f"{code} {error_code or ''}".encode()
                self.send_response(code)
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def _answer(self) -> bytes | None:
                server.requests.append((self.command, self.path, dict(self.headers.items())))
                prefix = f"/{server.repo_id}/resolve/"
                if not self.path.startswith(prefix):
                    owner_repo = "/".join(self.path.lstrip("/").split("/")[:2])
                    if "/resolve/" in self.path and owner_repo != server.repo_id:
                        return self._error(404, "RepoNotFound")
                    return self._error(404)
                revision, _, filename = self.path[len(prefix):].partition("/")
                revision, filename = unquote(revision), unquote(filename.split("?")[0])
                commit = server.resolve(revision)
                if commit is None:
                    return self._error(404, "RevisionNotFound")
                files = server.commits[commit]
                if filename not in files:
                    return self._error(404, "EntryNotFound", commit=commit)
                data = files[filename]
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                if filename in server.lfs:
                    sha = hashlib.sha256(data).hexdigest()
                    self.send_header("ETag", f'"{sha}"')
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                else:
                    self.send_header("ETag", f'"{git_blob_sha1(data)}"')
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                return data

            def do_HEAD(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                body = self._answer()
                if body:
                    self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def file_requests(self, method: str | None = None) -> list[tuple[str, str, dict[str, str]]]:
        """Recorded requests for repository files (not the client's telemetry)."""
        return [r for r in self.requests if "/resolve/" in r[1] and (method is None or r[0] == method)]
