"""Alerts evaluated in the stream: rules (YAML) fire within seconds, exactly once, with trace links.

`rules` reads the rule file, `evaluate` turns records and time into values and state changes,
`store` keeps state in Redis (or memory, for a backtest), `delivery` posts notifications, and
`runner` ties them together for `tracestream alerts run`. See docs/alerts.md.
"""
