"""The AIOS HTTP edge: REST, WebSocket and dashboard over the streams' producers, topics and stores."""
