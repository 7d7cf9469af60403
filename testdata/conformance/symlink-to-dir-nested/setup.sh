ln -s dir context/dirlink
ln -s ../dir/a.txt context/dir/rel
