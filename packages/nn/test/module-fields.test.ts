/**
 * @file A Module field that holds a module, modules or a trainable tensor nobody registered makes
 * parameters() throw naming the field; registered fields and aliases of registered ones do not.
 */
import { ones, type Tensor } from '@qgrad/core';
import { Linear, Module, ModuleList, Parameter, Sequential } from '@qgrad/nn';
import { describe, expect, it } from 'vitest';

describe('unregistered Module fields', () => {
  it('a field holding an unregistered layer is an error naming it and the fix', () => {
    class Net extends Module {
      fc = new Linear(3, 2);
    }
    expect(() => new Net().parameters()).toThrow(/field 'fc' of Net holds a Linear that is not registered.*registerModule\('fc'/);
  });

  it('a nested unregistered parameter is named by its dotted path', () => {
    class Scale extends Module {
      gain: Tensor = Parameter(ones([4]));
    }
    class Net extends Module {
      inner = this.registerModule('inner', new Scale());
    }
    expect(() => new Net().parameters()).toThrow(/field 'inner.gain' of Scale holds a tensor \[4\] that requires grad.*registerParameter/);
  });

  it('an array of layers points to ModuleList', () => {
    class Net extends Module {
      layers = [new Linear(2, 2), new Linear(2, 2)];
    }
    expect(() => new Net().parameters()).toThrow(/field 'layers' of Net is an array of modules.*ModuleList/);
  });

  it('registered fields, aliases of registered modules and tied weights are fine', () => {
    class Net extends Module {
      body = this.registerModule('body', new Sequential(new Linear(3, 3), new Linear(3, 3)));
      blocks = this.registerModule('blocks', new ModuleList([new Linear(3, 3)]));
      last = this.body.at(1); // a shortcut to a registered layer
      tied = (this.body.at(0) as Linear).weight; // a tensor registered deeper in the tree
    }
    expect(new Net().parameters()).toHaveLength(6);
  });

  it('private fields are not inspected', () => {
    class Student extends Module {
      readonly #teacher = new Linear(3, 2);
      fc = this.registerModule('fc', new Linear(3, 2));
      teacher(): Linear {
        return this.#teacher;
      }
    }
    expect(new Student().parameters()).toHaveLength(2);
  });
});
