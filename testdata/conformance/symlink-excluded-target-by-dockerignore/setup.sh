ln -s a.txt context/link
