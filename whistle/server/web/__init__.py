# SPDX-License-Identifier: AGPL-3.0-or-later
"""The web interfaces: the source blueprint (public pages, JSON API) and the investigator one."""
