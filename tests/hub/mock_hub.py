#!/usr/bin/env python3
"""A local stand-in for the Hugging Face Hub's HTTP API, enough for `deltaserve serve ORG/NAME`
(CI has no internet). Serves folders as model repos:

  GET /api/models/ORG/NAME/revision/REV[?blobs=true]  -> {"sha", "siblings": [{"rfilename", "size",
                                                          "blobId", "lfs": {"sha256", "size"}}]}
  GET /ORG/NAME/resolve/REV/FILE   small files directly; LFS files (*.safetensors, *.model, *.bin)
                                   redirect (302) to /cdn/SHA256 like the Hub's CDN; Range: bytes=N- is honoured
Errors carry the Hub's X-Error-Code / X-Error-Message headers (RepoNotFound, RevisionNotFound,
EntryNotFound; 401 for a missing or wrong token when --token is set).

Usage: mock_hub.py --repo ORG/NAME=DIR [--repo ...] [--token T] [--throttle BYTES_PER_S]
                   [--corrupt FILE] [--log FILE] [--port-file FILE]
Prints "PORT <n>" on stdout once listening (port 0: any free port). Every request is appended to
--log as one JSON line {"method", "path", "range"} so tests can check what was fetched."""
import argparse
import hashlib
import http.server
import json
import os
import re
import sys
import threading
import time

LFS_SUFFIXES = ('.safetensors', '.model', '.bin')


def git_blob_id(data):
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


class Repo:
    def __init__(self, repo_id, folder):
        self.id = repo_id
        self.files = {}
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, 'rb') as f:
                    self.files[name] = f.read()
        h = hashlib.sha1(repo_id.encode())
        for name, data in self.files.items():
            h.update(name.encode() + hashlib.sha256(data).digest())
        self.commit = h.hexdigest()

    def listing(self):
        siblings = []
        for name, data in self.files.items():
            s = {'rfilename': name, 'size': len(data), 'blobId': git_blob_id(data)}
            if name.endswith(LFS_SUFFIXES):
                s['lfs'] = {'sha256': hashlib.sha256(data).hexdigest(), 'size': len(data), 'pointerSize': 134}
            siblings.append(s)
        return {'id': self.id, 'modelId': self.id, 'sha': self.commit, 'private': False, 'siblings': siblings}


def make_handler(args, repos, by_sha, log_lock):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, fmt, *a):  # quiet
            pass

        def record(self):
            if args.log:
                with log_lock, open(args.log, 'a') as f:
                    f.write(json.dumps({'method': self.command, 'path': self.path,
                                        'range': self.headers.get('Range'),
                                        'auth': self.headers.get('Authorization') is not None}) + '\n')

        def error(self, status, code, message):
            body = json.dumps({'error': message}).encode()
            self.send_response(status)
            if code:
                self.send_header('X-Error-Code', code)
            self.send_header('X-Error-Message', message)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def authorized(self):
            if not args.token:
                return True
            auth = self.headers.get('Authorization')
            if auth is None:
                self.error(401, None, 'Access to this resource requires authentication (set a token)')
                return False
            if auth != 'Bearer ' + args.token:
                self.error(401, None, 'Invalid credentials in Authorization header')
                return False
            return True

        def find(self, org, name, rev):
            repo = repos.get(org + '/' + name)
            if repo is None:
                self.error(404, 'RepoNotFound', 'Repository not found')
                return None
            if rev not in ('main', repo.commit):
                self.error(404, 'RevisionNotFound', 'Invalid rev id: ' + rev)
                return None
            return repo

        def send_bytes(self, data, content_type='application/octet-stream', headers=()):
            start = 0
            m = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
            if m and int(m.group(1)) < len(data):
                start = int(m.group(1))
                self.send_response(206)
                self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, len(data) - 1, len(data)))
            else:
                self.send_response(200)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(data) - start))
            self.send_header('Accept-Ranges', 'bytes')
            self.end_headers()
            chunk = 64 * 1024
            for off in range(start, len(data), chunk):
                try:
                    self.wfile.write(data[off:off + chunk])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                if args.throttle:
                    time.sleep(chunk / args.throttle)

        def do_GET(self):
            self.record()
            path = self.path.split('?')[0]
            m = re.fullmatch(r'/api/models/([^/]+)/([^/]+)/revision/([^/]+)', path)
            if m:
                if not self.authorized():
                    return
                repo = self.find(*m.groups())
                if repo:
                    self.send_bytes(json.dumps(repo.listing()).encode(), 'application/json')
                return
            m = re.fullmatch(r'/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)', path)
            if m:
                if not self.authorized():
                    return
                repo = self.find(*m.groups()[:3])
                if not repo:
                    return
                fname = m.group(4)
                data = repo.files.get(fname)
                if data is None:
                    self.error(404, 'EntryNotFound', fname + ' does not exist on "main"')
                    return
                headers = [('X-Repo-Commit', repo.commit), ('ETag', '"%s"' % git_blob_id(data))]
                if fname.endswith(LFS_SUFFIXES):
                    sha = hashlib.sha256(data).hexdigest()
                    self.send_response(302)
                    self.send_header('Location', '/cdn/' + sha + ('?corrupt=1' if fname == args.corrupt else ''))
                    self.send_header('X-Linked-Etag', '"%s"' % sha)
                    self.send_header('X-Linked-Size', str(len(data)))
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                self.send_bytes(data, headers=headers)
                return
            m = re.fullmatch(r'/cdn/([0-9a-f]{64})', path)
            if m and m.group(1) in by_sha:
                data = by_sha[m.group(1)]
                if 'corrupt=1' in self.path:
                    data = bytes([data[0] ^ 0xff]) + data[1:]
                self.send_bytes(data)
                return
            self.error(404, None, 'Not found')

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--repo', action='append', default=[], help='ORG/NAME=DIR')
    p.add_argument('--token', default='')
    p.add_argument('--throttle', type=float, default=0, help='bytes per second for file bodies (0: no limit)')
    p.add_argument('--corrupt', default='', help='a file whose CDN bytes are altered (checksum test)')
    p.add_argument('--log', default='')
    p.add_argument('--port', type=int, default=0)
    args = p.parse_args()
    repos, by_sha = {}, {}
    for spec in args.repo:
        rid, folder = spec.split('=', 1)
        r = Repo(rid, folder)
        repos[rid] = r
        for data in r.files.values():
            by_sha[hashlib.sha256(data).hexdigest()] = data
    server = http.server.ThreadingHTTPServer(('127.0.0.1', args.port),
                                             make_handler(args, repos, by_sha, threading.Lock()))
    server.daemon_threads = True
    print('PORT %d' % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == '__main__':
    sys.exit(main())
