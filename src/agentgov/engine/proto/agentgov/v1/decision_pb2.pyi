from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HttpRequest(_message.Message):
    __slots__ = ("method", "path", "host", "headers", "body", "body_truncated", "source_ip", "request_id", "envoy_attributes_json")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BODY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENVOY_ATTRIBUTES_JSON_FIELD_NUMBER: _ClassVar[int]
    method: str
    path: str
    host: str
    headers: _containers.ScalarMap[str, str]
    body: bytes
    body_truncated: bool
    source_ip: str
    request_id: str
    envoy_attributes_json: str
    def __init__(self, method: _Optional[str] = ..., path: _Optional[str] = ..., host: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., body: _Optional[bytes] = ..., body_truncated: _Optional[bool] = ..., source_ip: _Optional[str] = ..., request_id: _Optional[str] = ..., envoy_attributes_json: _Optional[str] = ...) -> None: ...

class ActionRequest(_message.Message):
    __slots__ = ("credential", "kind", "name", "resource_type", "resource_id", "server", "arguments_json", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    credential: str
    kind: str
    name: str
    resource_type: str
    resource_id: str
    server: str
    arguments_json: str
    context: _containers.ScalarMap[str, str]
    def __init__(self, credential: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., server: _Optional[str] = ..., arguments_json: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("http", "action", "include_input")
    HTTP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INPUT_FIELD_NUMBER: _ClassVar[int]
    http: HttpRequest
    action: ActionRequest
    include_input: bool
    def __init__(self, http: _Optional[_Union[HttpRequest, _Mapping]] = ..., action: _Optional[_Union[ActionRequest, _Mapping]] = ..., include_input: _Optional[bool] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("id", "roles", "tenant", "authenticated")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    authenticated: bool
    def __init__(self, id: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., authenticated: _Optional[bool] = ...) -> None: ...

class Obligations(_message.Message):
    __slots__ = ("redact", "headers", "remove_tools")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REDACT_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TOOLS_FIELD_NUMBER: _ClassVar[int]
    redact: _containers.RepeatedScalarFieldContainer[str]
    headers: _containers.ScalarMap[str, str]
    remove_tools: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, redact: _Optional[_Iterable[str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., remove_tools: _Optional[_Iterable[str]] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class HttpDirectives(_message.Message):
    __slots__ = ("headers", "response_headers_to_add", "request_headers_to_remove", "has_body", "body", "query_parameters_to_set", "query_parameters_to_remove", "dynamic_metadata_json")
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    HAS_BODY_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAMETERS_TO_SET_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAMETERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    response_headers_to_add: _containers.RepeatedCompositeFieldContainer[Header]
    request_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
    has_body: bool
    body: str
    query_parameters_to_set: _containers.RepeatedCompositeFieldContainer[Header]
    query_parameters_to_remove: _containers.RepeatedScalarFieldContainer[str]
    dynamic_metadata_json: str
    def __init__(self, headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., response_headers_to_add: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., request_headers_to_remove: _Optional[_Iterable[str]] = ..., has_body: _Optional[bool] = ..., body: _Optional[str] = ..., query_parameters_to_set: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., query_parameters_to_remove: _Optional[_Iterable[str]] = ..., dynamic_metadata_json: _Optional[str] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision_id", "allow", "reasons", "status", "obligations", "subject", "inputs_json", "directives", "retry_after_s", "detail", "consumed_headers", "policy_revision", "approval_id", "approval_status_url", "approval_rpc_id_json")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVES_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_HEADERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_STATUS_URL_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_RPC_ID_JSON_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    allow: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    status: int
    obligations: Obligations
    subject: Subject
    inputs_json: _containers.RepeatedScalarFieldContainer[str]
    directives: HttpDirectives
    retry_after_s: int
    detail: str
    consumed_headers: _containers.RepeatedScalarFieldContainer[str]
    policy_revision: str
    approval_id: str
    approval_status_url: str
    approval_rpc_id_json: str
    def __init__(self, decision_id: _Optional[str] = ..., allow: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., status: _Optional[int] = ..., obligations: _Optional[_Union[Obligations, _Mapping]] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., inputs_json: _Optional[_Iterable[str]] = ..., directives: _Optional[_Union[HttpDirectives, _Mapping]] = ..., retry_after_s: _Optional[int] = ..., detail: _Optional[str] = ..., consumed_headers: _Optional[_Iterable[str]] = ..., policy_revision: _Optional[str] = ..., approval_id: _Optional[str] = ..., approval_status_url: _Optional[str] = ..., approval_rpc_id_json: _Optional[str] = ...) -> None: ...

class BatchDecideRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DecideRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DecideRequest, _Mapping]]] = ...) -> None: ...

class BatchDecideResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[DecideResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[DecideResponse, _Mapping]]] = ...) -> None: ...
