"""Join tokens: HS256 JWTs minted by `signaling-node token`, and hand-made ones for bad inputs."""

import base64
import hashlib
import hmac
import json
import subprocess


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret, claims, alg="HS256"):
    """Signs `claims` with HMAC-SHA256 under `secret` (bytes)."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def claims_of(token):
    """The claims of a JWT, unverified (to see what a minted token carries)."""
    return json.loads(_unb64(token.split(".")[1]))


def header_of(token):
    """The header of a JWT, unverified."""
    return json.loads(_unb64(token.split(".")[0]))


def node_token(binary, secret_file, user, room, extra=()):
    """A token from `signaling-node token` (the way README.md says to mint one for tests)."""
    cmd = [str(binary), "token", "--jwt-secret-file", str(secret_file), "--user", user, "--room", room]
    out = subprocess.run(cmd + list(extra), capture_output=True, text=True, check=True)
    return out.stdout.strip()
