mkdir -p t/top/sub && echo one > t/top/one && echo two > t/top/sub/two && ln -s one t/top/link
tar --owner=0 --group=0 --numeric-owner --mtime=@1 --sort=name -C t -cf context/a.tar top
