ln -s a.txt context/d1/link
