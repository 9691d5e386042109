"""Model zoo for SPA: tiny torch models exported to ONNX as pruning test fixtures."""
