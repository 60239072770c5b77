"""The project says how it may be used (issue 11): an MIT LICENSE at the top of the tree,
copyright the tailcut authors, named in the README."""
import os
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


class LicenseTest(unittest.TestCase):
    def test_mit_license_named_in_readme(self):
        text = read("LICENSE")
        self.assertTrue(text.startswith("MIT License\n"), text[:80])
        self.assertRegex(text, r"Copyright \(c\) \d{4} the tailcut authors\n")
        self.assertIn("Permission is hereby granted, free of charge", text)
        self.assertIn('THE SOFTWARE IS PROVIDED "AS IS"', text)
        self.assertRegex(read("README.md"), r"\(LICENSE\)|`LICENSE`")
        self.assertIn("MIT", read("README.md"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
