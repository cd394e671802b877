"""The sans-I/O core: channel names, cursors, events and their wire encodings.

Nothing here imports asyncio or a network library: bytes and objects in, bytes and objects out.
"""
