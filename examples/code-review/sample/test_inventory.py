"""Unit tests for inventory.py (run with `python3 -m unittest`)."""

import unittest

import inventory


class InventoryTest(unittest.TestCase):
    def test_add_item_adds_to_existing_quantity(self):
        stock = inventory.add_item({"bolt": 2}, "bolt", 3)
        self.assertEqual(stock, {"bolt": 5})

    def test_add_item_rejects_non_positive_quantity(self):
        with self.assertRaises(ValueError):
            inventory.add_item({}, "bolt", 0)

    def test_remove_item_never_goes_below_zero(self):
        with self.assertRaises(ValueError):
            inventory.remove_item({"bolt": 1}, "bolt", 2)
        self.assertEqual(inventory.remove_item({"bolt": 2}, "bolt", 2), {"bolt": 0})

    def test_total_value(self):
        self.assertEqual(inventory.total_value({"bolt": 2, "nut": 3}, {"bolt": 5, "nut": 1}), 13)

    def test_low_stock_lists_items_below_threshold_sorted(self):
        stock = {"washer": 1, "bolt": 0, "nut": 10}
        self.assertEqual(inventory.low_stock(stock, 5), ["bolt", "washer"])

    def test_low_stock_threshold_is_exclusive(self):
        stock = {"bolt": 5, "nut": 4}
        self.assertEqual(inventory.low_stock(stock, 5), ["nut"])


if __name__ == "__main__":
    unittest.main()
