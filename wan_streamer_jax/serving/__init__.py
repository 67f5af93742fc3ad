"""Real-time duplex serving: the binary protocol, the slot pool, the aiohttp server, the web page, a client."""
