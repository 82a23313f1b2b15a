"""The cases of TF Serving's tensorflow_serving/util/json_tensor_test.cc, replayed.

Each test keeps the C++ test's name, input JSON and expected TensorProto (text
format) or JSON; errors are checked by code and message substring, as there.
The classify/regress cases are left out: this server does not serve those APIs.
"""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from infra.modelserver import json_tensor
from infra.modelserver.status import ServingError

pytestmark = pytest.mark.slow  # imports TensorFlow's protos


def infomap(**dtypes: str) -> dict:
    infos = {}
    for name, dtype in dtypes.items():
        infos[name] = text_format.Parse(f"dtype: {dtype}", meta_graph_pb2.TensorInfo())
    return infos


def fill(body: str, infos: dict) -> tuple[predict_pb2.PredictRequest, str]:
    request = predict_pb2.PredictRequest()
    fmt = json_tensor.fill_predict_request_from_json(body, lambda _sig: infos, request)
    return request, fmt


def proto(text: str) -> tensor_pb2.TensorProto:
    return text_format.Parse(text, tensor_pb2.TensorProto())


def assert_proto(actual, expected_text: str) -> None:
    expected = proto(expected_text)
    # Byte equality: NaN equals NaN and -0 differs from 0, as MessageDifferencer sees them.
    assert actual.SerializeToString(deterministic=True) == \
        expected.SerializeToString(deterministic=True), f"{actual}\n!=\n{expected}"


def fill_error(body: str, infos: dict, code: str = "INVALID_ARGUMENT") -> str:
    with pytest.raises(ServingError) as info:
        fill(body, infos)
    assert info.value.code == code
    return info.value.message


def tensors(**texts: str) -> dict:
    return {name: proto(text) for name, text in texts.items()}


def as_strings(text: str):
    """Parse JSON keeping every number as its token (CompareJsonAllValuesAsStrings)."""
    return json.loads(text, parse_float=str, parse_int=str, parse_constant=str)


INT_2x3x2 = """dtype: DT_INT32 tensor_shape { dim { size: 2 } dim { size: 3 } dim { size: 2 } }
    int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6 int_val: 7 int_val: 8
    int_val: 9 int_val: 0 int_val: 1 int_val: 2"""


# --- requests -------------------------------------------------------------------------


def test_single_unnamed_tensor():
    request, fmt = fill('{"instances": [[1,2],[3,4],[5,6]]}', infomap(default="DT_INT32"))
    assert fmt == json_tensor.ROW and len(request.inputs) == 1
    assert_proto(request.inputs["default"], """dtype: DT_INT32
        tensor_shape { dim { size: 3 } dim { size: 2 } }
        int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6""")


def test_deeply_nested_well_formed():
    body = '{"instances":[1], "nested":' + "[" * 500000 + "]" * 500000 + "}"
    request, _ = fill(body, infomap(default="DT_INT32"))
    assert len(request.inputs) == 1


def test_deeply_nested_malformed():
    body = '{"signature_name":' + "[" * 500000 + "]" * 500000 + "}"
    assert "key must be a string value" in fill_error(body, infomap(default="DT_INT32"))


def test_mixed_input_for_float_tensor():
    request, fmt = fill('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
                        infomap(default="DT_FLOAT"))
    assert fmt == json_tensor.ROW
    assert_proto(request.inputs["default"], """dtype: DT_FLOAT tensor_shape { dim { size: 7 } }
        float_val: 1 float_val: 2.0 float_val: 3 float_val: 4 float_val: 5.003
        float_val: 0.007 float_val: 0.0""")


def test_mixed_input_for_double_tensor():
    request, _ = fill('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}',
                      infomap(default="DT_DOUBLE"))
    assert_proto(request.inputs["default"], """dtype: DT_DOUBLE tensor_shape { dim { size: 7 } }
        double_val: 1.0 double_val: 2 double_val: 3 double_val: 4 double_val: 0.662
        double_val: 0 double_val: 0.0""")


def test_float_tensor_with_precision_loss():
    for token in ("1435774380", "1435774380.0"):
        request, _ = fill('{"instances": [' + token + ']}', infomap(default="DT_FLOAT"))
        assert_proto(request.inputs["default"], """dtype: DT_FLOAT
            tensor_shape { dim { size: 1 } } float_val: 1435774380""")


def test_float_tensor_that_exceeds_max_returns_inf():
    # absl::Substitute("$0", DBL_MAX) writes six significant digits.
    for token, expected in (("1.79769e+308", "inf"), ("-1.79769e+308", "-inf")):
        request, _ = fill('{ "instances": [' + token + '] }', infomap(default="DT_FLOAT"))
        assert_proto(request.inputs["default"], f"""dtype: DT_FLOAT
            tensor_shape {{ dim {{ size: 1 }} }} float_val: {expected}""")


def test_float_tensor_that_exceeds_min_returns_zero():
    for token, expected in (("2.22507e-308", "0"), ("-2.22507e-308", "-0")):
        request, _ = fill('{ "instances": [' + token + '] }', infomap(default="DT_FLOAT"))
        assert_proto(request.inputs["default"], f"""dtype: DT_FLOAT
            tensor_shape {{ dim {{ size: 1 }} }} float_val: {expected}""")


def test_single_unnamed_tensor_with_signature():
    request, fmt = fill('{"signature_name": "predict_images", "instances": [[1,2]]}',
                        infomap(default="DT_INT32"))
    assert request.model_spec.signature_name == "predict_images"
    assert_proto(request.inputs["default"], """dtype: DT_INT32
        tensor_shape { dim { size: 1 } dim { size: 2 } } int_val: 1 int_val: 2""")


def test_tensor_from_non_null_terminated_buffer():
    text = '{"instances": [[1,2],[3,4],[5,6]]}X'
    request, _ = fill(text[:-1], infomap(default="DT_INT32"))
    assert list(request.inputs["default"].int_val) == [1, 2, 3, 4, 5, 6]


def test_single_unnamed_tensor_base64_scalars():
    request, _ = fill('{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
                      infomap(default="DT_STRING"))
    assert_proto(request.inputs["default"], """dtype: DT_STRING
        tensor_shape { dim { size: 2 } } string_val: "hello" string_val: "world" """)


def test_single_unnamed_tensor_base64_lists():
    request, _ = fill('{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
                      infomap(default="DT_STRING"))
    assert_proto(request.inputs["default"], """dtype: DT_STRING
        tensor_shape { dim { size: 2 } dim { size: 1 } }
        string_val: "hello" string_val: "world" """)


def test_single_named_tensor_base64():
    request, _ = fill('{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], '
                      '[{ "b64": "d29ybGQ=" }] ]}]}', infomap(default="DT_STRING"))
    assert_proto(request.inputs["default"], """dtype: DT_STRING
        tensor_shape { dim { size: 1 } dim { size: 2 } dim { size: 1 } }
        string_val: "hello" string_val: "world" """)


def test_multiple_named_tensor():
    request, fmt = fill("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
         "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
         "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}""",
                        infomap(int_tensor="DT_INT32", str_tensor="DT_STRING",
                                float_tensor="DT_FLOAT", dbl_tensor="DT_DOUBLE"))
    assert fmt == json_tensor.ROW and len(request.inputs) == 4
    assert_proto(request.inputs["int_tensor"], INT_2x3x2)
    assert_proto(request.inputs["str_tensor"], """dtype: DT_STRING
        tensor_shape { dim { size: 2 } dim { size: 2 } }
        string_val: "foo" string_val: "bar" string_val: "baz" string_val: "bat" """)
    assert_proto(request.inputs["float_tensor"], """dtype: DT_FLOAT
        tensor_shape { dim { size: 2 } dim { size: 2 } }
        float_val: 1.0 float_val: NaN float_val: 2.0 float_val: Infinity""")
    assert_proto(request.inputs["dbl_tensor"], """dtype: DT_DOUBLE
        tensor_shape { dim { size: 2 } dim { size: 1 } } double_val: NaN double_val: 2.0""")


def test_single_unnamed_tensor_columnar_format():
    expected = """dtype: DT_INT32 tensor_shape { dim { size: 1 } dim { size: 3 } dim { size: 2 } }
        int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6"""
    for body in ('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
                 '{"inputs": [[[1,2],[3,4],[5,6]]]}'):
        request, fmt = fill(body, infomap(int_tensor="DT_INT32"))
        assert fmt == json_tensor.COLUMNAR
        assert_proto(request.inputs["int_tensor"], expected)


def test_multiple_named_tensor_columnar_format():
    request, fmt = fill("""{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]],
        "str_tensor": ["foo", "bar"], "bin_tensor": { "b64" : "aGVsbG8=" }}}""",
                        infomap(int_tensor="DT_INT32", str_tensor="DT_STRING",
                                bin_tensor="DT_STRING"))
    assert fmt == json_tensor.COLUMNAR and len(request.inputs) == 3
    assert_proto(request.inputs["str_tensor"], """dtype: DT_STRING
        tensor_shape { dim { size: 2 } } string_val: "foo" string_val: "bar" """)
    assert_proto(request.inputs["bin_tensor"], """dtype: DT_STRING tensor_shape {}
        string_val: "hello" """)


def test_single_unnamed_tensor_errors():
    infos = infomap(default="DT_INT32")
    assert "document is empty" in fill_error("", infos)
    assert "must be a string value" in fill_error(
        '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', infos)
    assert "Not formatted correctly" in fill_error(
        '{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', infos)
    assert "Expecting tensor size" in fill_error('{"instances": [[1,2],[3,4],[5,6,7]]}', infos)
    assert "Expecting shape" in fill_error('{"instances": [[1,2],[3,4],[[5,6]]]}', infos)
    assert "Expecting shape" in fill_error('{"instances": [1, [1]]}', infos)
    assert "not of expected type" in fill_error('{"instances": [[1,2],["a", "b"]]}', infos)


def test_multiple_named_tensor_errors():
    infos = infomap(int_tensor="DT_INT32", str_tensor="DT_STRING")
    assert "Expecting shape" in fill_error("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""", infos)
    assert "Expecting tensor size" in fill_error("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}""", infos)
    assert "Expecting object but got list" in fill_error("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        [1, 20, 30],
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""", infos)
    assert "Expecting value/list but got object" in fill_error(
        '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}',
        infomap(str_tensor="DT_STRING"))


def test_base64_uses_the_standard_alphabet_only():
    """absl::Base64Unescape: '+/' decode, the URL-safe '-_' do not (serving issue #1141)."""
    infos = infomap(default="DT_STRING")
    request, _ = fill('{"instances": [{"b64": "+/8="}, {"b64": "+/8"}]}', infos)
    assert list(request.inputs["default"].string_val) == [b"\xfb\xff", b"\xfb\xff"]
    assert fill_error('{"instances": [{"b64": "-_8="}]}', infos).endswith(
        "Error: INVALID_ARGUMENT: Unable to base64 decode")


# --- responses ------------------------------------------------------------------------


def test_from_json_single_tensor():
    tmap = tensors(int_tensor=INT_2x3x2)
    expected = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]
    assert json.loads(json_tensor.make_json_from_tensors(tmap, json_tensor.ROW)) == \
        {"predictions": expected}
    assert json.loads(json_tensor.make_json_from_tensors(tmap, json_tensor.COLUMNAR)) == \
        {"outputs": expected}


def test_from_json_single_scalar_tensor():
    tmap = tensors(int_tensor="""dtype: DT_INT32 tensor_shape { dim { size: 5 } }
        int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5""")
    assert json.loads(json_tensor.make_json_from_tensors(tmap, json_tensor.ROW)) == \
        {"predictions": [1, 2, 3, 4, 5]}
    assert json.loads(json_tensor.make_json_from_tensors(tmap, json_tensor.COLUMNAR)) == \
        {"outputs": [1, 2, 3, 4, 5]}


def test_from_json_single_bytes_tensor():
    tmap = tensors(str_tensor_bytes="""dtype: DT_STRING
        tensor_shape { dim { size: 2 } dim { size: 2 } }
        string_val: "hello" string_val: "world" string_val: "tf" string_val: "serving" """)
    assert json.loads(json_tensor.make_json_from_tensors(tmap, json_tensor.ROW)) == {
        "predictions": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                        [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}


def test_from_json_single_float_tensor_six_digit_precision():
    tmap = tensors(float_tensor="""dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 3 } }
        float_val: 9000000 float_val: 999999 float_val: 0.50000 float_val: .0003
        float_val: .00003 float_val: 555557.5""")
    assert as_strings(json_tensor.make_json_from_tensors(tmap, json_tensor.ROW)) == \
        as_strings('{"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}')


def test_from_json_single_float_tensor_non_finite():
    tmap = tensors(float_tensor="""dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 2 } }
        float_val: NaN float_val: Infinity float_val: 3 float_val: -Infinity""")
    assert as_strings(json_tensor.make_json_from_tensors(tmap, json_tensor.ROW)) == \
        as_strings('{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}')


def test_from_json_single_tensor_errors():
    with pytest.raises(ServingError, match="empty tensor map"):
        json_tensor.make_json_from_tensors({}, json_tensor.ROW)
    complex_map = tensors(tensor="""dtype: DT_COMPLEX64 tensor_shape { dim { size: 2 } }
        scomplex_val: 1.0 scomplex_val: 2.0""")
    with pytest.raises(ServingError, match="tensor type: complex64") as info:
        json_tensor.make_json_from_tensors(complex_map, json_tensor.ROW)
    assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ServingError, match="no shape information"):
        json_tensor.make_json_from_tensors(tensors(tensor="dtype: DT_INT32 int_val: 1"),
                                           json_tensor.ROW)


def test_from_json_half_tensor_is_refused():
    """float16 outputs cannot be written as JSON (400), as in TF Serving."""
    tmap = tensors(tensor="dtype: DT_HALF tensor_shape { dim { size: 1 } } half_val: 15360")
    with pytest.raises(ServingError, match="tensor type: half") as info:
        json_tensor.make_json_from_tensors(tmap, json_tensor.COLUMNAR)
    assert info.value.http_status == 400


def test_from_json_multiple_named_tensors():
    tmap = tensors(
        int_tensor=INT_2x3x2,
        str_tensor="""dtype: DT_STRING tensor_shape { dim { size: 2 } dim { size: 2 } }
            string_val: "foo" string_val: "bar" string_val: "baz" string_val: "bat" """,
        float_tensor="""dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 1 } }
            float_val: 1.0 float_val: 2.0""",
        double_scalar_tensor="""dtype: DT_DOUBLE tensor_shape { dim { size: 2 } }
            double_val: 8.0 double_val: 9.0""",
        str_tensor_bytes="""dtype: DT_STRING tensor_shape { dim { size: 2 } dim { size: 2 } }
            string_val: "hello" string_val: "world" string_val: "tf" string_val: "serving" """)
    assert json.loads(json_tensor.make_json_from_tensors(tmap, json_tensor.ROW)) == {
        "predictions": [
            {"double_scalar_tensor": 8.0, "float_tensor": [1.0],
             "int_tensor": [[1, 2], [3, 4], [5, 6]], "str_tensor": ["foo", "bar"],
             "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]},
            {"double_scalar_tensor": 9.0, "float_tensor": [2.0],
             "int_tensor": [[7, 8], [9, 0], [1, 2]], "str_tensor": ["baz", "bat"],
             "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]}]}
    assert json.loads(json_tensor.make_json_from_tensors(tmap, json_tensor.COLUMNAR)) == {
        "outputs": {
            "double_scalar_tensor": [8.0, 9.0], "float_tensor": [[1.0], [2.0]],
            "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
            "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                                 [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}}


def test_from_json_multiple_named_tensors_errors():
    tmap = tensors(
        int_tensor="""dtype: DT_INT32 tensor_shape { dim { size: 2 } dim { size: 3 } }
            int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6""",
        str_tensor="""dtype: DT_STRING tensor_shape { dim { size: 1 } dim { size: 3 } }
            string_val: "foo" string_val: "bar" string_val: "baz" """)
    with pytest.raises(ServingError, match="inconsistent batch size"):
        json_tensor.make_json_from_tensors(tmap, json_tensor.ROW)


def test_from_json_zero_batch_tensors():
    single = tensors(int_tensor="dtype: DT_INT32 tensor_shape { dim { size: 0 } dim { size: 2 } }")
    assert json.loads(json_tensor.make_json_from_tensors(single, json_tensor.ROW)) == \
        {"predictions": []}
    several = tensors(
        str_tensor="""dtype: DT_STRING
            tensor_shape { dim { size: 0 } dim { size: 1 } dim { size: 2 } }""",
        float_tensor="""dtype: DT_FLOAT
            tensor_shape { dim { size: 0 } dim { size: 3 } dim { size: 4 } }""")
    assert json.loads(json_tensor.make_json_from_tensors(several, json_tensor.ROW)) == \
        {"predictions": []}
    mixed = tensors(
        int_tensor="dtype: DT_INT32 tensor_shape { dim { size: 0 } dim { size: 2 } }",
        str_tensor="""dtype: DT_STRING tensor_shape { dim { size: 1 } dim { size: 2 } }
            string_val: "foo" string_val: "bar" """)
    with pytest.raises(ServingError, match="inconsistent batch size"):
        json_tensor.make_json_from_tensors(mixed, json_tensor.ROW)


def test_int8_and_uint8_outputs_are_json_integers():
    tmap = tensors(q="""dtype: DT_INT8 tensor_shape { dim { size: 1 } dim { size: 3 } }
        int_val: -128 int_val: 0 int_val: 127""")
    assert json_tensor.make_json_from_tensors(tmap, json_tensor.COLUMNAR) == \
        '{"outputs": [[-128, 0, 127]]}'


def test_status_error():
    for message in ('Bad key: "key"', "Bad key: 'key'"):
        assert json.loads(json_tensor.make_json_from_status(message)) == {"error": message}


def test_parse_keeps_nan_and_infinity():
    request, _ = fill('{"inputs": [NaN, -Infinity]}', infomap(x="DT_DOUBLE"))
    values = list(request.inputs["x"].double_val)
    assert math.isnan(values[0]) and values[1] == -math.inf
