"""The config keys lockgate knows, per section: implemented, ignored (LiteLLM keys not implemented yet: a
warning, never an error) and refused (settings whose absence would make the gateway less strict than its
operator expects, or that load code). Data only; :mod:`lockgate.config` reads it.
"""

from __future__ import annotations

__all__ = [
    "_GENERAL",
    "_GENERAL_IGNORED",
    "_GENERAL_REFUSED",
    "_LITELLM",
    "_LITELLM_IGNORED",
    "_LOCKGATE",
    "_MODEL_ENTRY",
    "_MODEL_INFO",
    "_MODES",
    "_PARAMS_IGNORED",
    "_ROUTER",
    "_ROUTER_IGNORED",
    "_SECRET_PARAMS",
    "_STRATEGIES",
    "_TOP",
    "_TOP_IGNORED",
]

# --- per section -------------------------------------------------------------------
# implemented: read and honoured. ignored: LiteLLM keys not implemented yet (a warning, never an error).
# refused: settings whose absence would make the gateway less strict than its operator expects.

_TOP = {
    "model_list",
    "general_settings",
    "litellm_settings",
    "router_settings",
    "environment_variables",
    "lockgate",
    "callback_settings",
}
_TOP_IGNORED = {
    "guardrails", "mcp_servers", "search_tools", "assistant_settings", "credential_list",
    "vector_store_registry", "prompts", "policies",
}  # fmt: skip

_GENERAL = {
    "master_key", "database_url", "store_prompts_in_spend_logs", "max_request_size_mb", "user_api_key_cache_ttl",
    "disable_spend_logs", "background_health_checks", "health_check_interval",
    "maximum_spend_logs_retention_period", "maximum_spend_logs_retention_interval",
    "alerting", "alert_types", "alert_to_webhook_url", "alerting_threshold",
}  # fmt: skip
_GENERAL_IGNORED = {
    "database_connection_pool_limit", "database_connection_timeout", "allow_requests_on_db_unavailable",
    "disable_prisma_schema_update", "store_model_in_db", "supported_db_objects",
    "disable_spend_updates", "proxy_batch_write_at", "proxy_budget_rescheduler_min_time",
    "proxy_budget_rescheduler_max_time", "use_redis_transaction_buffer", "use_spend_logs_partitioning",
    "disable_reset_budget", "spend_report_frequency", "max_parallel_requests", "global_max_parallel_requests",
    "max_response_size_mb", "health_check_details", "alerting_args",
    "forward_client_headers_to_llm_api", "forward_openai_org_id", "pass_through_endpoints",
    "completion_model", "litellm_license", "public_routes", "user_header_name", "user_header_mappings",
    "reject_clientside_metadata_tags", "default_team_disabled", "ui_access_mode", "litellm_key_header_name",
    "always_include_stream_usage", "infer_model_from_keys", "key_management_settings", "disable_master_key_return",
    "enable_oauth2_auth", "proxy_batch_polling_interval", "embedding_model", "log_level", "openai_api_base",
    "disable_user_auth", "store_audit_logs", "redis_host", "redis_port", "redis_password",
}  # fmt: skip
_GENERAL_REFUSED = {
    "custom_auth": "lockgate never loads code named in a config",
    "custom_key_generate": "lockgate never loads code named in a config",
    "custom_sso": "lockgate never loads code named in a config",
    "allowed_ips": "IP allow-lists are not implemented yet; starting without one would be less strict",
    "allowed_routes": "route allow-lists are not implemented yet; starting without one would be less strict",
    "admin_only_routes": "admin-only routes are not implemented yet; starting without them would be less strict",
    "enable_jwt_auth": "JWT auth is not implemented yet",
    "enforce_user_param": "enforce_user_param is not implemented yet; starting without it would be less strict",
    "enforced_params": "enforced_params is not implemented yet; starting without it would be less strict",
    "allow_client_side_credentials": "a client may never choose an upstream's URL or credentials",
    "key_management_system": "secret managers are not implemented yet; keys would be missing",
    "use_google_kms": "secret managers are not implemented yet",
    "use_azure_key_vault": "secret managers are not implemented yet",
}

_LITELLM = {
    "drop_params", "num_retries", "request_timeout", "fallbacks", "model_group_alias", "max_budget", "budget_duration",
    "max_end_user_budget", "default_fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
    "allowed_fails", "cooldown_time", "require_auth_for_metrics_endpoint",
    "callbacks", "success_callback", "failure_callback", "turn_off_message_logging",
}  # fmt: skip
_LITELLM_IGNORED = {
    "service_callbacks", "redact_user_api_key_info", "redact_messages_in_exceptions", "json_logs",
    "langfuse_default_tags", "modify_params", "cache", "cache_params", "force_ipv4",
    "max_internal_user_budget", "internal_user_budget_duration", "default_key_generate_params",
    "upperbound_key_generate_params", "key_generation_settings", "default_team_settings",
    "default_internal_user_params", "store_audit_logs", "extra_spend_tag_headers",
    "disable_end_user_cost_tracking", "disable_end_user_cost_tracking_prometheus_only",
    "enable_json_schema_validation", "network_mock", "mcp_aliases", "ssl_verify", "set_verbose",
    "telemetry", "enable_preview_features",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name", "aws_session_name",
    "aws_role_name", "aws_profile_name", "vertex_project", "vertex_location", "log_raw_request_response",
    "return_response_headers", "public_model_groups",
}  # fmt: skip

_ROUTER = {
    "routing_strategy", "num_retries", "timeout", "stream_timeout", "fallbacks", "model_group_alias",
    "redis_host", "redis_port", "redis_password", "redis_db", "redis_url", "retry_after", "retry_policy",
    "model_group_retry_policy", "context_window_fallbacks", "content_policy_fallbacks", "default_fallbacks",
    "max_fallbacks", "allowed_fails", "allowed_fails_policy", "cooldown_time", "disable_cooldowns",
    "routing_strategy_args",
}  # fmt: skip
_ROUTER_IGNORED = {
    "enable_pre_call_checks", "optional_pre_call_checks", "cache_kwargs",
    "enable_tag_filtering", "tag_filtering_match_any", "default_litellm_params", "default_max_parallel_requests",
    "provider_budget_config", "client_ttl", "caching_groups", "deployment_affinity_ttl_seconds",
    "ignore_invalid_deployments", "enable_health_check_routing", "enable_weighted_failover", "guardrail_list",
    "search_tools", "default_model", "failover", "retries", "cache_responses", "set_verbose",
}  # fmt: skip
_STRATEGIES = {
    "simple-shuffle", "least-busy", "usage-based-routing", "usage-based-routing-v2", "latency-based-routing",
    "cost-based-routing", "provider-budget-routing", "lar1",
}  # fmt: skip

_LOCKGATE = {
    "max_request_size_mb", "shutdown_grace_seconds", "connect_timeout", "upstream_pool_size", "sqlite_path",
    "model_api_base_allow", "instances", "budgets_fail_open", "default_max_output_tokens", "price_file",
    "unpriced", "prompt_retention", "retry_budget", "degrade_factor", "slo_ttft", "hedge_after",
    "stream_idle_timeout", "metrics", "metrics_labels", "metrics_max_series", "alert_period", "callback_queue_size",
}  # fmt: skip

_MODEL_ENTRY = {"model_name", "litellm_params", "model_info"}
_MODEL_INFO = {
    "id", "mode", "base_model", "input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
    "cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_reasoning_token", "input_cost_per_second", "output_cost_per_second", "max_tokens",
    "max_input_tokens", "max_output_tokens", "access_groups", "team_id", "db_model", "description",
    "supports_vision", "supports_function_calling", "supports_tool_choice", "supports_prompt_caching",
    "supports_reasoning", "supports_response_schema", "supports_pdf_input", "supports_audio_input",
    "supports_audio_output", "supports_web_search", "supports_computer_use", "litellm_provider", "tier",
    "allowed_fails", "cooldown_time", "allowed_fails_policy",
}  # fmt: skip
_MODES = {"chat", "embedding", "completion", "image_generation", "audio_transcription", "audio_speech",
          "moderation", "rerank", "responses"}  # fmt: skip
# litellm_params keys LiteLLM knows that lockgate does not use (yet).
_PARAMS_IGNORED = {
    "itpm", "otpm", "tags", "tag_regex", "litellm_credential_name", "max_budget", "budget_duration",
    "merge_reasoning_content_in_choices", "mock_response", "use_in_pass_through", "keepalive_seconds",
    "configurable_clientside_auth_params", "input_cost_per_second", "output_cost_per_second", "region_name",
    "use_litellm_proxy",
}  # fmt: skip
# litellm_params keys that become request defaults when the provider accepts them as request fields.
_SECRET_PARAMS = {
    "api_key",
    "azure_ad_token",
    "aws_secret_access_key",
    "aws_session_token",
    "vertex_credentials",
}
