"""Model groups and deployments: which upstream serves a request, and in what order to try them."""
