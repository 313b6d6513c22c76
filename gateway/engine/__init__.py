"""The data plane: our own HTTP/1.1 engine (server, upstream pool, ASGI bridge) on uvloop + llhttp."""
