"""Upstream providers: one small adapter module each, all behind :class:`lockgate.providers.base.Provider`."""
