"""Site health (pure logic): rise and fall counts, outlier detection and ejection back-off."""

from edgeplane.health._book import Health, HealthBook, HealthPolicy, Outcome, SiteHealth

__all__ = ["Health", "HealthBook", "HealthPolicy", "Outcome", "SiteHealth"]
