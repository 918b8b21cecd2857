"""The slice chooser shown before a package with multi-file datasets is loaded: per dataset and
dimension, the values to load, with the resulting layer count."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QDialog, QTreeWidgetItem, QWidget

from ..layers import Selection, dataset_dimensions, layer_count

UI_PATH = Path(__file__).resolve().parent / "ui" / "slices.ui"
DIMENSION_ROLE = Qt.UserRole  # (resource name, dimension name) on a dimension item; the value on a value item


def has_slices(package: dict[str, Any]) -> bool:
    """Whether some dataset of the package has a dimension with more than one value."""
    resources = (package.get("datapackage") or {}).get("resources", [])
    return any(len(d.values) > 1 for r in resources for d in dataset_dimensions(r))


class SliceDialog(QDialog):
    def __init__(self, package: dict[str, Any], parent: Optional[QWidget] = None):
        super().__init__(parent)
        uic.loadUi(str(UI_PATH), self)
        self.package = package
        tree = self.sliceTree
        for resource in (package.get("datapackage") or {}).get("resources", []):
            dimensions = [d for d in dataset_dimensions(resource) if len(d.values) > 1]
            if not dimensions:
                continue
            top = QTreeWidgetItem([resource.get("title") or resource["name"]])
            tree.addTopLevelItem(top)
            for dimension in dimensions:
                item = QTreeWidgetItem([dimension.title + (f" ({dimension.unit})" if dimension.unit else "")])
                item.setData(0, DIMENSION_ROLE, (resource["name"], dimension.name))
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsAutoTristate)
                top.addChild(item)
                for value in dimension.values:
                    child = QTreeWidgetItem([value + ("  (default)" if value == dimension.default else "")])
                    child.setData(0, DIMENSION_ROLE, value)
                    child.setData(0, Qt.UserRole + 1, value == dimension.default)
                    child.setFlags(child.flags() | Qt.ItemIsUserCheckable)
                    child.setCheckState(0, Qt.Checked)
                    item.addChild(child)
            top.setExpanded(True)
        tree.itemChanged.connect(lambda *_: self.update_count())
        self.defaultButton.clicked.connect(lambda: self.check(default_only=True))
        self.allButton.clicked.connect(lambda: self.check(default_only=False))
        self.update_count()

    def value_items(self):
        for i in range(self.sliceTree.topLevelItemCount()):
            top = self.sliceTree.topLevelItem(i)
            for j in range(top.childCount()):
                dimension = top.child(j)
                for k in range(dimension.childCount()):
                    yield dimension, dimension.child(k)

    def check(self, default_only: bool) -> None:
        for _dimension, item in self.value_items():
            item.setCheckState(0, Qt.Checked if not default_only or item.data(0, Qt.UserRole + 1) else Qt.Unchecked)

    def set_values(self, dataset: str, dimension_name: str, values: set[str]) -> None:
        for dimension, item in self.value_items():
            if dimension.data(0, DIMENSION_ROLE) == (dataset, dimension_name):
                item.setCheckState(0, Qt.Checked if item.data(0, DIMENSION_ROLE) in values else Qt.Unchecked)

    def selection(self) -> Optional[Selection]:
        """Only the dimensions with values left out; None when everything is chosen."""
        chosen: dict[tuple[str, str], set[str]] = {}
        everything: dict[tuple[str, str], bool] = {}
        for dimension, item in self.value_items():
            key = dimension.data(0, DIMENSION_ROLE)
            chosen.setdefault(key, set())
            everything.setdefault(key, True)
            if item.checkState(0) == Qt.Checked:
                chosen[key].add(item.data(0, DIMENSION_ROLE))
            else:
                everything[key] = False
        selection: Selection = {}
        for (dataset, name), values in chosen.items():
            if not everything[(dataset, name)]:
                selection.setdefault(dataset, {})[name] = values
        return selection or None

    def layer_count(self) -> int:
        return layer_count(self.package, self.selection())

    def update_count(self) -> None:
        count = self.layer_count()
        self.countLabel.setText(f"{count} layer(s) will be loaded")
        self.buttons.button(self.buttons.Ok).setEnabled(count > 0)
