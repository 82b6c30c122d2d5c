"""How the API schema describes our bearer tokens (drf-spectacular extension).

Loaded by ``TokensConfig.ready`` so the schema names the scheme instead of
leaving operations without security requirements.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tokens.api.authentication.BearerTokenAuthentication"
    name = "machineToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "An access token of this portal (client credentials grant) carrying the "
                "operation's scope and issued for the API's audience (resource parameter)."
            ),
        }
