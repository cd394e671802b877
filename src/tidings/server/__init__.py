"""The network edge: HTTP/1.1 and WebSocket connections and the four transports."""
