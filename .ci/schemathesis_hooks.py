"""schemathesis hooks for Annals' CI: the import endpoints take NDJSON bodies, which
schemathesis sends as the plain text its generator makes for a `string` schema."""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
