ln context/one context/two
