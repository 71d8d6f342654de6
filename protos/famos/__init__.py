"""Generated gRPC code (python -m protos.generate); the .proto beside it is the source."""
