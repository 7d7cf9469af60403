ln -s /a.txt context/abs
