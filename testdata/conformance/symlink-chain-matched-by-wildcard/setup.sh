ln -s a.txt context/m1
ln -s m1 context/l2
