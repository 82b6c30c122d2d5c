from django.apps import AppConfig


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = "Tokens and signing keys"

    def ready(self) -> None:
        # Registers the bearer-token scheme with the API schema generator.
        from tokens.api import schema  # noqa: F401
