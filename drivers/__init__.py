"""Protocol clients for field instruments.

Nothing in this package imports from the rest of metrogate: drivers turn bytes on a
wire into :class:`drivers.base.Sample` objects and know nothing about calibration,
rules, MQTT or storage.
"""
