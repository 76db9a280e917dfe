"""API: the aiohttp app serving the Ductile and Laddr dialects; one module per resource."""
