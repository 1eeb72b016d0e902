"""Platform side of metrogate: ingest (MQTT → InfluxDB / SQLite) and supervision reports.

The ingest service consumes the signed batches of docs/wire.md through an MQTT
shared subscription, verifies them, writes them to a store and acknowledges each
message to the broker only once the store accepted its content. See docs/ingest.md.
"""
