"""Workload identity federation: external tokens that authenticate a machine under a trust.

- ``binding``: the HMAC that ties a trust row to the server secrets;
- ``conditions``: CEL conditions over the external token's claims;
- ``templates``: ready-made trusts for GitHub Actions, GitLab CI and Kubernetes;
- ``services`` / ``selectors``: adding, removing and reading trusts (audited);
- ``verification``: checking an external token against a machine's trusts,
  the heart of the ``federated_jwt`` client authentication method.
"""
