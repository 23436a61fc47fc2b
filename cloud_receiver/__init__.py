"""Cloud receiver of BrightKitchen: MQTT ingest, storage, device provisioning and the /api/v1 app.

Data flow: broker → `mqtt.Subscriber` (own MQTT v5 client, one thread) → `ingest.Ingestor` (validate, store, ack)
→ `storage.SqliteStorage` + `media` files → `hub.AlertHub` → API / SSE / push.
"""
