"""The supervision console: a web application over the platform's store.

``app`` (aiohttp routes, login, CSRF), ``service`` (what pages share; the risk
ranking over the store), ``store`` (InfluxQL and SQLite readers, downsampled in the
query), ``analysis`` (control charts, Nelson rules, Cpk), ``risk`` (the explainable
score), ``audit`` (event-log verification), ``views``/``html`` (pages), ``i18n``
(English and Simplified Chinese), ``report_html`` (the self-contained report).
docs/supervision.md describes what it shows and how it is configured.
"""
