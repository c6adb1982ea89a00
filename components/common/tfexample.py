"""tf.train.Example messages without importing TensorFlow.

Importing TensorFlow costs seconds of CPU in every Beam worker, and ingest only needs to
serialise Examples. These classes are built by the protobuf library from the same schema as
tensorflow/core/example/{feature,example}.proto (same package, names and field numbers):
TensorFlow parses the bytes as its own, and they equal its deterministic serialisation
(tests/test_tfexample.py checks both).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_Field = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str, number: int, kind: int, type_name: str = "", repeated: bool = False
) -> _Field:
    label = _Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL
    field = _Field(name=name, number=number, type=kind, label=label)
    if type_name:  # set only for message fields (the descriptor tracks presence)
        field.type_name = type_name
    return field


def _schema() -> descriptor_pb2.FileDescriptorProto:
    """The messages of TensorFlow's feature.proto and example.proto that Examples need."""
    schema = descriptor_pb2.FileDescriptorProto(
        name="gallerytag/tensorflow_example.proto", package="tensorflow", syntax="proto3"
    )
    for name, kind in (
        ("BytesList", _Field.TYPE_BYTES),
        ("FloatList", _Field.TYPE_FLOAT),
        ("Int64List", _Field.TYPE_INT64),
    ):
        values = _field("value", 1, kind, repeated=True)
        if kind != _Field.TYPE_BYTES:
            values.options.packed = True
        schema.message_type.add(name=name).field.append(values)

    feature = schema.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), start=1):
        type_name = ".tensorflow." + name.title().replace("_", "")
        field = _field(name, number, _Field.TYPE_MESSAGE, type_name)
        field.oneof_index = 0
        feature.field.append(field)

    features = schema.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.append(_field("key", 1, _Field.TYPE_STRING))
    entry.field.append(_field("value", 2, _Field.TYPE_MESSAGE, ".tensorflow.Feature"))
    features.field.append(
        _field("feature", 1, _Field.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", True)
    )

    example = schema.message_type.add(name="Example")
    example.field.append(_field("features", 1, _Field.TYPE_MESSAGE, ".tensorflow.Features"))
    return schema


# A private pool: TensorFlow's own definitions of these names may be loaded in the same process.
_pool = descriptor_pool.DescriptorPool()
_pool.Add(_schema())
Example = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tensorflow.Example"))


def serialize_example(features: dict[str, bytes | int]) -> bytes:
    """Serialise {name: bytes or int} as a tf.train.Example (one value per feature)."""
    example = Example()
    for name, value in features.items():
        feature = example.features.feature[name]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        else:
            feature.int64_list.value.append(value)
    # Deterministic: map entries in key order, so a rerun writes byte-identical shards.
    return example.SerializeToString(deterministic=True)
