"""How the stats page draws what it has: charts that scale with the data.

A chart is drawn only where it says more than a sentence: one busy day is shown by the
hour, a long window by the week, a window of a single hour as a sentence; labels that
were each given the same number of times are a list, not a row of equal bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from predictions.operations.stats.results import PredictionStats

# Labels drawn as bars at most; the rest are counted.
LABEL_BARS = 10
# A window whose images span more days than this is drawn by the week.
DAILY_UP_TO_DAYS = 45


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    percent: int  # of the largest bar, for the CSS width/height classes


@dataclass(frozen=True)
class VolumeChart:
    """Images over time: ``bucket`` is "hour", "day" or "week" ("" when a sentence says it all)."""

    bucket: str
    bars: list[Bar] = field(default_factory=list)
    summary: str = ""

    @property
    def busiest(self) -> int:
        return max((bar.value for bar in self.bars), default=0)


@dataclass(frozen=True)
class LabelChart:
    """The labels given: bars for those given more than once (at most ``LABEL_BARS``),
    the rest (or all, when every label was given equally often) as a plain list."""

    bars: list[Bar] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)
    listed_count: int = 0  # how often each listed label was given, when they share one count
    more: int = 0  # labels neither drawn nor listed (beyond the report's top labels)


def bars(items: list[tuple[str, int]]) -> list[Bar]:
    """Each value as a whole percentage of the largest."""
    largest = max((value for _, value in items), default=0) or 1
    return [Bar(label=label, value=value, percent=round(100 * value / largest)) for label, value in items]


def volume_chart(report: PredictionStats) -> VolumeChart:
    """Images over the window, in the bucket its span calls for."""
    busy = [day for day in report.per_day if day.predictions]
    if not busy:
        return VolumeChart(bucket="")
    total = sum(day.predictions for day in busy)
    images = f"{total:,} image{'s' if total != 1 else ''}"
    if len(busy) == 1:
        only_day = busy[0].day.isoformat()
        hours = report.per_hour
        if len(hours) <= 1:
            at = f" between {hours[0][0]:%H:00} and {(hours[0][0] + timedelta(hours=1)):%H:00}" if hours else ""
            return VolumeChart(bucket="", summary=f"{images.capitalize()} on {only_day}{at}.")
        first, last = hours[0][0], hours[-1][0]
        counts = dict(hours)
        series = []
        moment = first
        while moment <= last:
            series.append((f"{moment:%H:00}", counts.get(moment, 0)))
            moment += timedelta(hours=1)
        return VolumeChart(
            bucket="hour", bars=bars(series), summary=f"{images.capitalize()} on {only_day}, by the hour."
        )
    first_day = busy[0].day
    span = (report.per_day[-1].day - first_day).days + 1
    shown = [day for day in report.per_day if day.day >= first_day]
    if span <= DAILY_UP_TO_DAYS:
        series = [(day.day.isoformat(), day.predictions) for day in shown]
        return VolumeChart(bucket="day", bars=bars(series), summary=f"{images} since {first_day.isoformat()}, by day.")
    weeks: dict[date, int] = {}
    for day in shown:
        monday = day.day - timedelta(days=day.day.weekday())
        weeks[monday] = weeks.get(monday, 0) + day.predictions
    series = [(f"week of {monday.isoformat()}", count) for monday, count in sorted(weeks.items())]
    return VolumeChart(bucket="week", bars=bars(series), summary=f"{images} since {first_day.isoformat()}, by week.")


def label_chart(report: PredictionStats) -> LabelChart:
    """Bars only where the counts differ; labels given once (or all equally often) listed."""
    labels = report.top_labels
    if not labels:
        return LabelChart()
    counts = {item.count for item in labels}
    if len(counts) == 1:
        return LabelChart(listed=[item.label for item in labels], listed_count=counts.pop())
    drawn = [item for item in labels if item.count > 1][:LABEL_BARS]
    rest = [item for item in labels if item not in drawn]
    return LabelChart(
        bars=bars([(item.label, item.count) for item in drawn]),
        listed=[item.label for item in rest if item.count == 1],
        listed_count=1,
        more=sum(1 for item in rest if item.count != 1),
    )
