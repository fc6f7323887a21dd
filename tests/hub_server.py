"""A small server speaking the Hugging Face Hub's HTTP protocol, for tests on 127.0.0.1.

It implements what the real ``huggingface_hub`` client (v2.x, Xet disabled) uses to publish and pull model
repos: repo creation, YAML validation, preupload (regular vs LFS), the git-LFS batch API with basic PUT
uploads, NDJSON commits, tags, revision info, tree listings (``snapshot_download``), and ``resolve`` downloads
with the ``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag`` and ``X-Error-Code`` headers the client reads. Repos
live in memory.

Failure injection for tests: while ``server.truncate[path] = n`` is set, every GET of ``path`` sends only its
first n bytes and closes the connection (the client's retries and resumes fail too); ``server.requests``
logs (method, path, headers).
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".h5", ".keras", ".bin", ".safetensors", ".tflite", ".onnx", ".zip")


def git_blob_sha(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, repo_id):
        self.repo_id = repo_id
        self.commits = {}
        self.refs = {}
        self.lfs = {}
        self._commit({".gitattributes": self._entry(b"*.h5 filter=lfs diff=lfs merge=lfs -text\n", False)},
                     None, "initial commit", "main")

    @staticmethod
    def _entry(data, lfs):
        return {"data": data, "lfs": lfs, "sha256": hashlib.sha256(data).hexdigest(), "git": git_blob_sha(data)}

    def _commit(self, tree, parent, message, branch):
        sha = hashlib.sha1(json.dumps([sorted((p, e["git"]) for p, e in tree.items()), parent, message,
                                       len(self.commits)]).encode()).hexdigest()
        self.commits[sha] = {"tree": tree, "parent": parent, "message": message}
        self.refs[branch] = sha
        return sha

    def resolve(self, revision):
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address=("127.0.0.1", 0)):
        super().__init__(address, Handler)
        self.repos = {}
        self.lock = threading.Lock()
        self.requests = []
        self.truncate = {}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class HubError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
ROUTES = [
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", rf"/api/models/{REPO}/tag/(?P<rev>[^/]+)", "tag"),
    ("GET", rf"/api/models/{REPO}/revision/(?P<rev>[^/]+)", "repo_info"),
    ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)", "tree"),
    ("GET", rf"/api/models/{REPO}", "repo_info"),
    ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _dispatch(self, method):
        path = urlsplit(self.path).path
        self.server.requests.append((method, path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        for verb, pattern, name in ROUTES:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items()}
                try:
                    with self.server.lock:
                        return getattr(self, name)(**args)
                except HubError as error:
                    return self._json({"error": error.message}, error.status, {"X-Error-Code": error.code}
                                      if error.code else None)
        return self._json({"error": f"no route for {method} {path}"}, 404)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # -- helpers ----------------------------------------------------------------------------------------

    def _json(self, obj, status=200, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _repo(self, repo):
        if repo not in self.server.repos:
            raise HubError(404, "RepoNotFound", f"Repository {repo} not found")
        return self.server.repos[repo]

    def _commit_sha(self, repo, rev):
        sha = repo.resolve(rev)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    # -- routes -----------------------------------------------------------------------------------------

    def create_repo(self):
        payload = json.loads(self.body)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else \
            f"user/{payload['name']}"
        if repo_id in self.server.repos:
            return self._json({"error": "You already created this model repo", "url": f"{self.server.endpoint}/"
                               f"{repo_id}"}, 409)
        self.server.repos[repo_id] = Repo(repo_id)
        return self._json({"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})

    def validate_yaml(self):
        content = json.loads(self.body)["content"]
        if not content.startswith("---\n") or "\n---" not in content[4:]:
            return self._json({"errors": [{"message": "no YAML front matter"}], "warnings": []}, 400)
        return self._json({"errors": [], "warnings": []})

    def preupload(self, repo, rev):
        repo = self._repo(repo)
        tree = repo.commits[self._commit_sha(repo, rev)]["tree"]
        files = []
        for f in json.loads(self.body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or f["size"] > 10_000_000
            existing = tree.get(f["path"])
            oid = None if existing is None else (existing["sha256"] if existing["lfs"] else existing["git"])
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return self._json({"files": files, "commitOid": repo.refs.get("main")})

    def lfs_batch(self, repo):
        repo = self._repo(repo)
        payload = json.loads(self.body)
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in repo.lfs:
                entry["actions"] = {"upload": {"href": f"{self.server.endpoint}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self.server.pending_lfs_repo = repo
        return self._json({"transfer": "basic", "objects": objects})

    def lfs_put(self, oid):
        if hashlib.sha256(self.body).hexdigest() != oid:
            return self._json({"error": "sha256 mismatch"}, 400)
        self.server.pending_lfs_repo.lfs[oid] = self.body
        return self._json({})

    def commit(self, repo, rev):
        repo = self._repo(repo)
        parent = self._commit_sha(repo, rev)
        tree = dict(repo.commits[parent]["tree"])
        message = ""
        for line in self.body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file":
                tree[value["path"]] = Repo._entry(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                if value["oid"] not in repo.lfs:
                    raise HubError(422, None, f"LFS object {value['oid']} was not uploaded")
                tree[value["path"]] = Repo._entry(repo.lfs[value["oid"]], True)
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            elif key == "deletedFolder":
                tree = {p: e for p, e in tree.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        branch = rev if rev in repo.refs and repo.refs[rev] in repo.commits and not re.fullmatch(
            r"[0-9a-f]{40}", rev) else "main"
        sha = repo._commit(tree, parent, message, branch)
        return self._json({"commitUrl": f"{self.server.endpoint}/{repo.repo_id}/commit/{sha}", "commitOid": sha,
                           "success": True})

    def tag(self, repo, rev):
        repo = self._repo(repo)
        sha = self._commit_sha(repo, rev)
        tag = json.loads(self.body)["tag"]
        if tag in repo.refs:
            return self._json({"error": f"Tag {tag} already exists"}, 409)
        repo.refs[tag] = sha
        return self._json({})

    def repo_info(self, repo, rev="main"):
        repo = self._repo(repo)
        sha = self._commit_sha(repo, rev)
        tree = repo.commits[sha]["tree"]
        siblings = [{"rfilename": p, "size": len(e["data"])} for p, e in sorted(tree.items())]
        return self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": False,
                           "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

    def tree(self, repo, rev):
        """The whole tree at ``rev`` on one page (the client follows a ``Link: next`` header only if sent)."""
        repo = self._repo(repo)
        sha = self._commit_sha(repo, rev)
        entries = []
        for path, entry in sorted(repo.commits[sha]["tree"].items()):
            item = {"type": "file", "oid": entry["git"], "size": len(entry["data"]), "path": path}
            if entry["lfs"]:
                item["lfs"] = {"oid": entry["sha256"], "size": len(entry["data"]), "pointerSize": 134}
            entries.append(item)
        return self._json(entries)

    def resolve(self, repo, rev, path):
        repo = self._repo(repo)
        sha = self._commit_sha(repo, rev)
        entry = repo.commits[sha]["tree"].get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}")
        data = entry["data"]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{entry["git"]}"')
        if entry["lfs"]:
            self.send_header("X-Linked-Etag", f'"{entry["sha256"]}"')
            self.send_header("X-Linked-Size", str(len(data)))
        cut = self.server.truncate.get(path) if self.command == "GET" else None
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data if cut is None else data[:cut])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True
