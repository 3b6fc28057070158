#!/usr/bin/env python3
"""A small schema registry speaking the part of the Confluent Schema Registry REST API
that K2 and the official confluent-kafka client use, for tests on machines where the real
one cannot be installed (docker-compose.yml runs the real one).

Endpoints: POST /subjects/{s}/versions, GET /subjects, GET /subjects/{s}/versions,
GET /subjects/{s}/versions/{v|latest}, GET /schemas/ids/{id}, PUT|GET /config/{s}.
Schema ids are global: the same schema (compared as parsed JSON) gets the same id under
every subject, as in Confluent's registry. It does not check compatibility.

Usage: confluent_api_registry.py [--port N]   (0 = any; prints "listening PORT")
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LOCK = threading.Lock()
SCHEMAS = {}        # id -> schema text
IDS = {}            # canonical json -> id
SUBJECTS = {}       # subject -> [id, ...] (version = index + 1)
CONFIG = {}         # subject -> compatibility


def canonical(text):
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self, code, message):
        self.reply(404, {"error_code": code, "message": message})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def parts(self):
        return [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]

    def do_POST(self):
        p = self.parts()
        if len(p) == 3 and p[0] == "subjects" and p[2] == "versions":
            text = self.body()["schema"]
            try:
                key = canonical(text)
            except ValueError:
                return self.reply(422, {"error_code": 42201, "message": "Invalid schema"})
            with LOCK:
                sid = IDS.get(key)
                if sid is None:
                    sid = len(SCHEMAS) + 1
                    IDS[key] = sid
                    SCHEMAS[sid] = text
                versions = SUBJECTS.setdefault(p[1], [])
                if sid not in versions:
                    versions.append(sid)
            return self.reply(200, {"id": sid})
        self.not_found(404, "not found")

    def do_PUT(self):
        p = self.parts()
        if len(p) == 2 and p[0] == "config":
            level = self.body().get("compatibility", "BACKWARD")
            with LOCK:
                CONFIG[p[1]] = level
            return self.reply(200, {"compatibility": level})
        self.not_found(404, "not found")

    def do_GET(self):
        p = self.parts()
        with LOCK:
            if p == ["subjects"]:
                return self.reply(200, sorted(SUBJECTS))
            if len(p) == 3 and p[:2] == ["schemas", "ids"]:
                text = SCHEMAS.get(int(p[2])) if p[2].isdigit() else None
                if text is None:
                    return self.not_found(40403, "Schema not found")
                return self.reply(200, {"schema": text})
            if len(p) >= 3 and p[0] == "subjects" and p[2] == "versions":
                versions = SUBJECTS.get(p[1])
                if versions is None:
                    return self.not_found(40401, "Subject not found")
                if len(p) == 3:
                    return self.reply(200, list(range(1, len(versions) + 1)))
                v = len(versions) if p[3] == "latest" else int(p[3])
                if not 1 <= v <= len(versions):
                    return self.not_found(40402, "Version not found")
                sid = versions[v - 1]
                return self.reply(200, {"subject": p[1], "version": v, "id": sid,
                                        "schema": SCHEMAS[sid]})
            if len(p) == 2 and p[0] == "config":
                return self.reply(200, {"compatibilityLevel": CONFIG.get(p[1], "BACKWARD")})
        self.not_found(404, "not found")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
