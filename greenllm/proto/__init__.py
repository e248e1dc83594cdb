"""Generated gRPC/protobuf code for ``protos/greenllm/v1`` (committed; ``make protos`` rebuilds it).

Import messages and stubs from :mod:`greenllm.proto.v1`, e.g.
``from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc``.
"""
