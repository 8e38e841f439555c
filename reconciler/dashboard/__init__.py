"""`circle dashboard`: the circle as its owners see it in a browser, read-only and live.

`collect` reads the store and the chain on one thread; `app` serves pages and their JSON
twins from the latest snapshot, behind `Guard`; `svg` draws the pictures; `chain` reviews the
pending proposals; `serve` runs uvicorn on a bound socket.
"""
