"""The widgets: the dock panel, the options page, the slice chooser, the map tool; one .ui each
(ui/)."""
