import socket, subprocess, sys, time, os, re
msd, bundle = sys.argv[1], sys.argv[2]
p = subprocess.Popen([msd, "--threads", "1", "serve", "--bundle", bundle, "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
line = p.stdout.readline()
host, port = re.search(r"http://([\d.]+):(\d+)/", line).groups(); port = int(port)
socks = []
for i in range(200):
    s = socket.create_connection((host, port)); s.sendall(b"POST /v1/generate HTTP/1.1\r\nhost: x\r\n"); socks.append(s)
t = time.time()
h = socket.create_connection((host, port)); h.settimeout(30); h.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
resp = h.recv(100).decode(errors="replace").splitlines()[0]
print(f"healthz with 200 half-open connections: {resp!r} in {time.time()-t:.2f} s")
time.sleep(11)
closed = 0
for s in socks:
    s.settimeout(0.5)
    try:
        d = s.recv(200)
        if d == b"" or d.startswith(b"HTTP/1.1 408"): closed += 1
    except Exception: pass
print(f"after 11 s: {closed}/200 half-open connections closed by the server (default --read-timeout-s 10)")
t = time.time()
s = socket.create_connection((host, port)); s.settimeout(30)
s.sendall(b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n{\"class\": 1")
r = s.recv(100).decode(errors="replace").splitlines()[0]
print(f"Content-Length 100000000 with 11 bytes sent: {r!r} after {time.time()-t:.2f} s")
p.terminate(); p.wait()
err = p.stderr.read()
print("panicked at" in err and "PANIC" or "no panic in server stderr")
