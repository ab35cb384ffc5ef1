"""Broadcasts and warm-up sequences: segments, content, the delivery engine, the admin UI and the CLI.

:mod:`.service` wires the parts (``Broadcasts``); :mod:`.engine` delivers; :mod:`.sequences`
runs the drip; :mod:`.campaigns` holds one-off campaigns; :mod:`.store` owns every query.
"""
