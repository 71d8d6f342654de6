"""Generated gRPC code (python -m famos.protos.generate); the .proto beside it is the source."""
