"""Vector memory: embedders (the local ONNX model, provider embeddings) and Qdrant."""
