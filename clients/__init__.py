"""Clients of the render server: a typed Python library (``famos.clients.render_client``) and the
`famos client` command. No torch: only gRPC, the generated protobuf code and the TIFF writer."""
