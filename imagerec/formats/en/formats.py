"""Dates as the rest of the site writes them (ISO order, 24-hour clock), in the Django
admin too: its default English format ("Dec. 4, 2026, 8:16 p.m.") read like another app."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
MONTH_DAY_FORMAT = "j F"
YEAR_MONTH_FORMAT = "F Y"
