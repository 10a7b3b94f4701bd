"""The sans-io HTTP/2 core shared by HBONE and the waypoint: frames and windows
(``connection``), the events it reports (``events``), header blocks
(``hpackmemo``) and the abuse budgets judged on frame headers (``guard``).

It imports neither ``hbone`` nor ``waypoint``: both build their roles on it.
"""
