"""FAMOS render server: streaming renderer, TIFF output and the gRPC service."""
