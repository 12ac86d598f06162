"""Writes app/src/openapi.json, the OpenAPI document GET /openapi.json serves.

Run `python3 scripts/openapi.py > app/src/openapi.json` after changing a route, parameter,
header or response; `make test` checks the two agree (make openapi-check) and schemathesis
checks the document against the running service.
"""
import json
LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
SUB = f"^{LABEL}(\\.{LABEL})*$"
def text_resp(desc, extra_headers=None):
    h = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
    if extra_headers: h.update(extra_headers)
    return {"description": desc, "headers": h,
            "content": {"text/plain": {"schema": {"type": "string"}}}}
def ref(name): return {"$ref": f"#/components/responses/{name}"}
def p(name): return {"$ref": f"#/components/parameters/{name}"}
capture_params = [p("Namespace"), p("Name"), p("ClusterId"), p("ImpersonateUser"), p("ImpersonateGroup"), p("RequestId")]
selection = [p("Node"), p("Since"), p("Until")]
errors_download = {"400": ref("BadRequest"), "401": ref("Unauthorized"), "403": ref("Forbidden"),
    "404": ref("NotFound"), "405": ref("MethodNotAllowed"), "502": ref("BadGateway"), "503": ref("Unavailable")}
def binary(ct, desc, headers):
    h = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
    h.update(headers)
    return {"description": desc, "headers": h, "content": {ct: {"schema": {"type": "string", "format": "binary"}}}}
disposition = {"Content-Disposition": {"description": "attachment; the file name to save as", "schema": {"type": "string"}}}
empty = {"description": "Nothing to send: no file on any node (or, for a merge, no packet in the selection).",
         "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}}
doc = {
 "openapi": "3.0.3",
 "info": {"title": "PacketCapture API", "version": "1",
   "description": "Download the pcap files a Calico Enterprise PacketCapture wrote on the cluster's nodes: as one zip, as one time-ordered pcapng, or one file at a time with Range. Guarded by namespace RBAC (`get` or `delete` on `packetcaptures/files`), for the local cluster or a managed cluster through Voltron (`X-Cluster-ID`). Every response carries `X-Request-ID`. Errors are one line of text/plain."},
 "servers": [{"url": "/"}],
 "security": [{"bearer": []}],
 "paths": {
  "/health": {"get": {"operationId": "health", "summary": "Liveness", "security": [],
     "parameters": [p("RequestId")],
     "responses": {"200": {"description": "Serving.", "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
        "405": ref("MethodNotAllowed")}}},
  "/version": {"get": {"operationId": "version", "summary": "The build", "security": [],
     "parameters": [p("RequestId")],
     "responses": {"200": {"description": "The build.", "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Version"}}}},
        "405": ref("MethodNotAllowed")}}},
  "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
     "parameters": [p("RequestId")],
     "responses": {"200": {"description": "This document.", "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": {"type": "object"}}}},
        "405": ref("MethodNotAllowed")}}},
  "/download/{namespace}/{name}/files.zip": {"get": {"operationId": "downloadZip",
     "summary": "Every file of every node, as one zip",
     "description": "One entry per file (named by the file; `{node}/{file}` when two nodes hold the same name), then `SHA256SUMS` (sha256sum format). A failure after the first byte aborts the transfer (never a zip that opens with files missing). With a window, the files kept are those whose rotation times say they may hold packets in it. When every selected node is `Finished` and `compression` is `stored` (the default), the zip is planned from the nodes' listings and served like a static file: `Content-Length`, `Accept-Ranges: bytes`, a strong `ETag` (it changes when a file's name, node, size or time changes, or the selection does) and `Last-Modified`; one range (`bytes=a-b`, `a-`, `-n`) is answered 206, several ranges or a malformed header the whole zip; `If-Range` that no longer matches gives the whole zip (200); a file that changed after the plan aborts the transfer (409 before the first byte). Otherwise (a node still capturing, or `deflate`) the zip streams without a length and `Range` is ignored.",
     "parameters": capture_params + [p("Compression")] + selection + [p("Range"), p("IfRange")],
     "responses": dict({"200": binary("application/zip", "The zip: with Content-Length, ETag and Last-Modified when planned (finished and stored), streamed without a length otherwise.", dict(disposition, **{
            "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
            "ETag": {"schema": {"type": "string"}}, "Last-Modified": {"schema": {"type": "string"}}})),
        "206": binary("application/zip", "The range asked for, of a planned zip: the same bytes a whole download has at those offsets.", dict(disposition, **{
            "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
            "Content-Range": {"required": True, "schema": {"type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"}},
            "ETag": {"schema": {"type": "string"}}, "Last-Modified": {"schema": {"type": "string"}}})),
        "204": empty,
        "409": text_resp("A file of a finished capture changed between the listing the zip was planned from and its read: download again."),
        "416": text_resp("The range starts past the end of the planned zip.", {"Content-Range": {"required": True, "schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"}}})}, **errors_download)}},
  "/download/{namespace}/{name}/merged.pcapng": {"get": {"operationId": "downloadMerged",
     "summary": "Every packet of every node, as one time-ordered pcapng",
     "description": "One pcapng: an interface per `{pod}_{iface}` file series of each node (`if_name` `{node}/{iface}`), packets in timestamp order with nanosecond resolution. A cut last record ends its stream; a file that is not a pcap fails the download. Streams beyond what the service may hold open at once are read into its spool and merged from there (507 when that spool is too small). With `filter`, only the packets the expression matches (as `tcpdump -r` would keep them); none: 204. With `follow=true` the capture is followed while it runs: the response (always 200, the section header sent at once) goes on until `until`, until no selected node is `Capturing`, or until the client leaves; packets from `since` (default: the request's time) are sent in time order once every other stream has reached their time or has been quiet for `lag`; streams that appear in the status are added; a node whose exec fails cuts the response.",
     "parameters": capture_params + selection + [p("Filter"), p("Follow"), p("Lag")],
     "responses": dict({"200": binary("application/x-pcapng", "The pcapng, streamed.", disposition), "204": empty,
        "501": ref("CannotFollow"), "507": ref("InsufficientStorage")}, **errors_download)}},
  "/files/{namespace}/{name}": {
    "get": {"operationId": "listFiles", "summary": "The capture's files per node",
     "parameters": capture_params,
     "responses": {"200": {"description": "Per node: state, directory, files.", "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Listing"}}}},
        "400": ref("BadRequest"), "401": ref("Unauthorized"), "403": ref("Forbidden"), "404": ref("NotFound"),
        "405": ref("MethodNotAllowed"), "502": ref("BadGateway"), "503": ref("Unavailable")}},
    "delete": {"operationId": "deleteFiles", "summary": "Remove the files from every node and the status",
     "description": "Needs `delete` on `packetcaptures/files`. Only a capture `Finished` on every node.",
     "parameters": capture_params,
     "responses": {"204": {"description": "Removed from every node and cleared from the status.", "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}},
        "400": ref("BadRequest"), "401": ref("Unauthorized"), "403": ref("Forbidden"), "404": ref("NotFound"),
        "405": ref("MethodNotAllowed"),
        "409": text_resp("Some node has not finished capturing (or reports no state)."),
        "502": ref("BadGateway"), "503": ref("Unavailable")}}},
  "/files/{namespace}/{name}/{node}/{file}": {"get": {"operationId": "getFile",
     "summary": "One file of one node, whole or a byte range",
     "description": "The file must be named in the node's status. One range (`bytes=a-b`, `a-`, `-n`) is answered 206; several ranges, or a malformed header, the whole file. The ETag is strong when the node is Finished, weak while the file may grow; If-Range with a strong ETag or the exact Last-Modified of a finished file keeps the range.",
     "parameters": capture_params + [p("NodePath"), p("FilePath"), p("Range"), p("IfRange")],
     "responses": {
        "200": binary("application/vnd.tcpdump.pcap", "The whole file.", dict(disposition, **{
            "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
            "ETag": {"schema": {"type": "string"}}, "Last-Modified": {"schema": {"type": "string"}}})),
        "206": binary("application/vnd.tcpdump.pcap", "The range asked for.", dict(disposition, **{
            "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
            "Content-Range": {"required": True, "schema": {"type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"}},
            "ETag": {"schema": {"type": "string"}}, "Last-Modified": {"schema": {"type": "string"}}})),
        "400": ref("BadRequest"), "401": ref("Unauthorized"), "403": ref("Forbidden"),
        "404": text_resp("No such capture or managed cluster, or the file is not in the node's status."),
        "405": ref("MethodNotAllowed"),
        "416": text_resp("The range starts past the end of the file.", {"Content-Range": {"required": True, "schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"}}}),
        "502": ref("BadGateway"), "503": ref("Unavailable")}}},
 },
 "components": {
  "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
     "description": "A Kubernetes token (reviewed by TokenReview or Calico's AuthenticationReview) or a Dex ID token."}},
  "headers": {"RequestId": {"required": True, "description": "The request's id: the X-Request-ID sent (one printable token of at most 128 characters), or a new UUID.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 128}}},
  "parameters": {
   "Namespace": {"name": "namespace", "in": "path", "required": True, "description": "The PacketCapture's namespace (a DNS-1123 label).",
      "schema": {"type": "string", "pattern": f"^{LABEL}$", "maxLength": 63}, "example": "dev"},
   "Name": {"name": "name", "in": "path", "required": True, "description": "The PacketCapture's name (a DNS-1123 subdomain).",
      "schema": {"type": "string", "pattern": SUB, "maxLength": 253}, "example": "web-traffic"},
   "NodePath": {"name": "node", "in": "path", "required": True, "description": "A node of the capture's status (percent-encoded).",
      "schema": {"type": "string", "pattern": SUB, "maxLength": 253}, "example": "node-1"},
   "FilePath": {"name": "file", "in": "path", "required": True, "description": "A file name of that node's status (percent-encoded); never `.`, `..`, or with `/` or control characters.",
      "schema": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$"}, "example": "web-traffic-abcde_cali1234.pcap"},
   "ClusterId": {"name": "X-Cluster-ID", "in": "header", "required": False, "description": "A managed cluster's id (through Voltron); absent, empty or `cluster` is the local cluster.",
      "schema": {"type": "string", "pattern": f"^({LABEL}(\\.{LABEL})*)?$", "maxLength": 253}},
   "ImpersonateUser": {"name": "Impersonate-User", "in": "header", "required": False, "description": "Act as this user (the caller needs `impersonate` on users), as the Kubernetes API server does.",
      "schema": {"type": "string", "minLength": 1}},
   "ImpersonateGroup": {"name": "Impersonate-Group", "in": "header", "required": False, "description": "Act with this group (repeatable; needs Impersonate-User, else 400).",
      "schema": {"type": "string"}},
   "RequestId": {"name": "X-Request-ID", "in": "header", "required": False, "description": "Echoed in the response and in the request's log lines; a value that is not one printable token of at most 128 characters is replaced by a new UUID.",
      "schema": {"type": "string"}},
   "Compression": {"name": "compression", "in": "query", "required": False, "description": "How entries are stored (case-insensitive; `none` is `stored`).",
      "schema": {"type": "string", "enum": ["stored", "deflate", "none"], "default": "stored"}},
   "Node": {"name": "node", "in": "query", "required": False, "style": "form", "explode": True,
      "description": "Only these nodes (repeatable); each must be a node of the capture's status (else 400 naming it).",
      "schema": {"type": "array", "items": {"type": "string", "pattern": SUB, "maxLength": 253}}},
   "Since": {"name": "since", "in": "query", "required": False, "description": "Only packets at or after this time (RFC 3339, fractional seconds allowed); must be before `until` (else 400).",
      "schema": {"type": "string", "format": "date-time"}, "example": "2026-11-30T10:00:00Z"},
   "Until": {"name": "until", "in": "query", "required": False, "description": "Only packets before this time (RFC 3339).",
      "schema": {"type": "string", "format": "date-time"}, "example": "2026-11-30T10:10:00Z"},
   "Filter": {"name": "filter", "in": "query", "required": False, "description": "A pcap-filter expression (tcpdump's syntax), compiled by libpcap: only the packets it matches are written, the interfaces stay as they are. At most 4096 bytes; one that does not compile is 400 with libpcap's message.",
      "schema": {"type": "string", "minLength": 1, "maxLength": 4096}, "example": "host 10.0.3.7 and tcp port 5432"},
   "Follow": {"name": "follow", "in": "query", "required": False, "description": "`true`: follow the running capture (the response goes on while it captures). Not `true` or `false` (any case): 400.",
      "schema": {"type": "boolean", "default": False}},
   "Lag": {"name": "lag", "in": "query", "required": False, "description": "With `follow=true` only (else 400): how long, in milliseconds, a quiet stream holds back the others' packets before they are sent. Bounds the delay of every packet.",
      "schema": {"type": "integer", "minimum": 0, "maximum": 10000, "default": 1000}},
   "Range": {"name": "Range", "in": "header", "required": False, "description": "`bytes=a-b`, `bytes=a-` or `bytes=-n`; anything else is ignored (the whole file).",
      "schema": {"type": "string"}, "example": "bytes=0-999"},
   "IfRange": {"name": "If-Range", "in": "header", "required": False, "description": "An ETag or HTTP date: the range is served only if it still matches.",
      "schema": {"type": "string"}},
  },
  "responses": {
   "BadRequest": text_resp("A malformed path, header or query value (named in the message); a node not in the capture; a reversed window; a merge of more streams than the service's whole memory budget holds."),
   "Unauthorized": text_resp("No valid token.", {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}}),
   "Forbidden": text_resp("Not allowed (the same answer whether the capture exists or not), or not allowed to impersonate."),
   "NotFound": text_resp("No such capture, or no such managed cluster."),
   "MethodNotAllowed": text_resp("The route does not answer this method.", {"Allow": {"required": True, "schema": {"type": "string"}}}),
   "BadGateway": text_resp("A cluster or node failed: an API server error, no entry pod, a read that failed, stalled or could not be read whole, a file that is not a pcap (for a merge); the message names it."),
   "Unavailable": text_resp("The API server, Voltron or the identity provider cannot be reached, or the managed cluster is not connected; or the service is busy: its node streams or memory for downloads stayed taken for QUEUE_TIMEOUT, or too many requests wait (then Retry-After says when to try again).",
      {"Retry-After": {"required": False, "description": "Seconds to wait, when the service is busy.", "schema": {"type": "integer", "minimum": 1}}}),
   "CannotFollow": text_resp("`follow=true` with a fetch backend that cannot follow files (both shipped backends, exec and local, can)."),
   "InsufficientStorage": text_resp("A merge of more streams than may be open at once needs more spool (SPOOL_LIMIT) than a download may use; choose nodes or a shorter window."),
  },
  "schemas": {
   "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["Ok"]}}, "additionalProperties": False},
   "Version": {"type": "object", "required": ["buildDate", "gitCommit", "gitTag", "buildVersion"], "additionalProperties": False,
      "properties": {k: {"type": "string"} for k in ["buildDate", "gitCommit", "gitTag", "buildVersion"]}},
   "Listing": {"type": "object", "required": ["namespace", "name", "cluster", "nodes"], "additionalProperties": False,
      "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}, "cluster": {"type": "string"},
        "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/NodeFiles"}}}},
   "NodeFiles": {"type": "object", "required": ["node", "state", "directory", "files"], "additionalProperties": False,
      "properties": {"node": {"type": "string"}, "state": {"type": "string", "nullable": True, "description": "Capturing, Finished, Error, ... (null when the status has none)"},
        "directory": {"type": "string"}, "files": {"type": "array", "items": {"$ref": "#/components/schemas/File"}}}},
   "File": {"type": "object", "required": ["name", "size", "modified", "path"], "additionalProperties": False,
      "properties": {"name": {"type": "string"}, "size": {"type": "integer", "minimum": 0},
        "modified": {"type": "string", "format": "date-time"},
        "path": {"type": "string", "description": "This file's URL path under GET /files/{namespace}/{name}/{node}/{file}."}}},
  },
 },
}
import copy
def add_head(path, operation_id, summary, description):
    """HEAD of `path`: GET's parameters and responses, without bodies."""
    head = copy.deepcopy(doc["paths"][path]["get"])
    head["operationId"] = operation_id
    head["summary"] = summary
    head["description"] = description
    for code, r in head["responses"].items():
        if "$ref" in r:
            name = r["$ref"].split("/")[-1]
            r = copy.deepcopy(doc["components"]["responses"][name])
            head["responses"][code] = r
        r.pop("content", None)
    doc["paths"][path]["head"] = head
add_head("/files/{namespace}/{name}/{node}/{file}", "headFile",
    "The headers of one file (or of a range), without reading it on the node",
    "What GET would answer, without the body: Content-Length, ETag, Last-Modified, Accept-Ranges, and Content-Range for a range.")
add_head("/download/{namespace}/{name}/files.zip", "headZip",
    "The headers of the zip (or of a range), without reading any file",
    "What GET would answer, without the body. A planned zip (every selected node `Finished`, stored): Content-Length, ETag, Last-Modified, Accept-Ranges, Content-Range for a range; each node's directory is listed, no file is read. Otherwise: 200 with the content type and no length, nothing read on the nodes.")
print(json.dumps(doc, indent=2))
