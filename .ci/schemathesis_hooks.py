"""schemathesis hooks for Annals' CI.

The import endpoints take NDJSON bodies, which schemathesis sends as the plain text its
generator makes for a `string` schema.

Most generated requests go to the store `fuzz`, which .ci/run creates before the run:
with only generated store names (which never exist) nearly every answer would be 404
`store_not_found`, and the success answers, whose bodies `response_schema_conformance`
checks against the document, would go untested. A quarter keep their generated name, so
the refusals of absent and malformed stores stay covered; dropping a store never names
`fuzz`, so it stays.
"""

import zlib

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")

STORE = "fuzz"


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    operation = context.operation
    drops_store = operation is not None and (
        operation.method.upper() == "DELETE" and operation.path == "/v1/stores/{store}"
    )
    # Negative cases may come without parameters (or with another shape): left as they are.
    if not isinstance(path_parameters, dict) or "store" not in path_parameters:
        return path_parameters
    if drops_store:
        # schemathesis also reuses names it saw in earlier answers: never drop `fuzz`.
        if path_parameters["store"] == STORE:
            path_parameters["store"] = STORE + "-absent"
        return path_parameters
    # Decided by the generated name, not by `random`: hypothesis reseeds `random` for every
    # case (the same draw each time), and a case must map the same way when replayed.
    generated = str(path_parameters["store"]).encode("utf-8", "surrogatepass")
    if zlib.crc32(generated) % 4 != 0:
        path_parameters["store"] = STORE
    return path_parameters
